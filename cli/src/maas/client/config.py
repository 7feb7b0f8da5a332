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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# Each field of Endpoints and the variable it is read from when no value is given.
VARIABLES = {
    "registry": "MAAS_REGISTRY_ADDRESS",
    "trainer": "MAAS_TRAINER_ADDRESS",
    "inference": "MAAS_INFERENCE_ADDRESS",
    "timeout": "MAAS_TIMEOUT",
    "token": "MAAS_TOKEN",
    "tls": "MAAS_TLS",
    "ca_file": "MAAS_TLS_CA",
    "cert_file": "MAAS_TLS_CERT",
    "key_file": "MAAS_TLS_KEY",
}


def from_environment(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The value of one Endpoints field from its MAAS_* variable, or its default: the one place they are read."""
    env = os.environ if env is None else env
    raw = env.get(VARIABLES[name]) or ""
    if name in DEFAULT_ADDRESSES:
        return raw or DEFAULT_ADDRESSES[name]
    if name == "timeout":
        try:
            return float(raw) if raw else 10.0
        except ValueError:
            raise InvalidArgument(f"MAAS_TIMEOUT: not a number: '{raw[:20]}'") from None
    if name == "tls":
        return _truthy(raw)
    return raw or None


def _env(name: str) -> Any:
    return field(default_factory=lambda: from_environment(name))


@dataclass(frozen=True)
class Endpoints:
    """Addresses of the three services plus the security options they share.

    A field given no value is read from its MAAS_* variable (`VARIABLES`), else its
    default: `Endpoints()` is the environment's, `Endpoints(registry="h:1")` the
    environment's with that address.
    """

    registry: str = _env("registry")
    trainer: str = _env("trainer")
    inference: str = _env("inference")
    timeout: float = _env("timeout")
    token: str | None = _env("token")
    tls: bool = _env("tls")
    ca_file: str | None = _env("ca_file")
    cert_file: str | None = _env("cert_file")
    key_file: str | None = _env("key_file")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Endpoints:
        """The values of `env` (default os.environ), with every non-None override on top."""
        values = {name: from_environment(name, env) for name in VARIABLES}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

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


def channel_config(service: str, config: ChannelConfig | str | None) -> ChannelConfig:
    """What every client constructor takes: a ChannelConfig as given, else the environment's for
    `service` (a string replaces only its address)."""
    if isinstance(config, ChannelConfig):
        return config
    return Endpoints.from_env(None, **{service: config}).channel(service)
