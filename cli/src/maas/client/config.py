"""Where the services are and how to reach them: flags first, then the environment.

Every client takes a `ChannelConfig` (address, deadline, TLS material, token);
`Endpoints` builds one per service from explicit values or the environment:

    MAAS_REGISTRY_ADDRESS   (default 127.0.0.1:50051)
    MAAS_TRAINER_ADDRESS    (default 127.0.0.1:50052)
    MAAS_INFERENCE_ADDRESS  (default 127.0.0.1:8001)
    MAAS_TOKEN              bearer token sent with every call
    MAAS_TLS                1 to use TLS with the system's roots
    MAAS_TLS_CA, MAAS_TLS_CERT, MAAS_TLS_KEY   PEM files (CA; client cert and key for mutual TLS)
    MAAS_TIMEOUT            deadline of each unary call, in seconds (default 10)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from maas.common.clients.base import ChannelConfig
from maas.common.errors import InvalidArgument

DEFAULT_ADDRESSES = {"registry": "127.0.0.1:50051", "trainer": "127.0.0.1:50052", "inference": "127.0.0.1:8001"}
SERVICES = tuple(DEFAULT_ADDRESSES)


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} file '{path}': {exc.strerror}") from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Endpoints:
    """Addresses of the three services plus the security options they share."""

    registry: str = DEFAULT_ADDRESSES["registry"]
    trainer: str = DEFAULT_ADDRESSES["trainer"]
    inference: str = DEFAULT_ADDRESSES["inference"]
    timeout: float = 10.0
    token: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Endpoints:
        """The environment's values, with every non-None override on top."""
        env = os.environ if env is None else env
        timeout = env.get("MAAS_TIMEOUT") or ""
        try:
            timeout_value = float(timeout) if timeout else 10.0
        except ValueError:
            raise InvalidArgument(f"MAAS_TIMEOUT: not a number: '{timeout[:20]}'") from None
        base = cls(
            registry=env.get("MAAS_REGISTRY_ADDRESS") or DEFAULT_ADDRESSES["registry"],
            trainer=env.get("MAAS_TRAINER_ADDRESS") or DEFAULT_ADDRESSES["trainer"],
            inference=env.get("MAAS_INFERENCE_ADDRESS") or DEFAULT_ADDRESSES["inference"],
            timeout=timeout_value,
            token=env.get("MAAS_TOKEN") or None,
            tls=_truthy(env.get("MAAS_TLS")),
            ca_file=env.get("MAAS_TLS_CA") or None,
            cert_file=env.get("MAAS_TLS_CERT") or None,
            key_file=env.get("MAAS_TLS_KEY") or None,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    def address(self, service: str) -> str:
        if service not in DEFAULT_ADDRESSES:
            raise InvalidArgument(f"unknown service '{service}'")
        return str(getattr(self, service))

    def channel(self, service: str) -> ChannelConfig:
        """The ChannelConfig of one service."""
        if self.timeout <= 0:
            raise InvalidArgument("timeout: must be positive")
        if bool(self.cert_file) != bool(self.key_file):
            raise InvalidArgument("mutual TLS needs both a client certificate and its key")
        return ChannelConfig(
            target=self.address(service),
            timeout=self.timeout,
            tls=self.tls or bool(self.ca_file or self.cert_file),
            root_certificates=_read(self.ca_file, "CA certificate"),
            certificate_chain=_read(self.cert_file, "client certificate"),
            private_key=_read(self.key_file, "client key"),
            token=self.token,
        )
