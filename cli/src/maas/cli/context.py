"""What every command shares: the global options, the service addresses and lazily opened clients."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from maas.client.config import Endpoints
from maas.client.registry import Registry
from maas.client.runner import LoopThread
from maas.client.trainer import Trainer

if TYPE_CHECKING:
    from maas.client.inference import Inference

GLOBAL_OPTIONS = ("registry", "trainer", "inference", "timeout", "token", "tls", "ca_file", "cert_file", "key_file")


def add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The connection options; on subcommands they default to SUPPRESS so either position works."""
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection (flags, else MAAS_* environment variables)")
    group.add_argument(
        "--registry",
        metavar="HOST:PORT",
        default=default,
        help="registry address (MAAS_REGISTRY_ADDRESS, default 127.0.0.1:50051)",
    )
    group.add_argument(
        "--trainer",
        metavar="HOST:PORT",
        default=default,
        help="trainer address (MAAS_TRAINER_ADDRESS, default 127.0.0.1:50052)",
    )
    group.add_argument(
        "--inference",
        metavar="HOST:PORT",
        default=default,
        help="inference address (MAAS_INFERENCE_ADDRESS, default 127.0.0.1:8001)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default,
        help="deadline of each call (MAAS_TIMEOUT, default 10)",
    )
    group.add_argument("--token", default=default, help="bearer token (MAAS_TOKEN)")
    group.add_argument(
        "--tls", action="store_true", default=argparse.SUPPRESS if suppress else False, help="use TLS (MAAS_TLS=1)"
    )
    group.add_argument("--ca-file", metavar="PEM", default=default, help="CA certificate (MAAS_TLS_CA)")
    group.add_argument("--cert-file", metavar="PEM", default=default, help="client certificate (MAAS_TLS_CERT)")
    group.add_argument("--key-file", metavar="PEM", default=default, help="client key (MAAS_TLS_KEY)")


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        overrides = {name: getattr(args, name, None) for name in GLOBAL_OPTIONS}
        if not overrides["tls"]:
            overrides["tls"] = None
        self.endpoints = Endpoints.from_env(**overrides)
        self.json = bool(getattr(args, "json", False))
        self._runner: LoopThread | None = None
        self._registry: Registry | None = None
        self._trainer: Trainer | None = None
        self._inference: Inference | None = None

    @property
    def runner(self) -> LoopThread:
        if self._runner is None:
            self._runner = LoopThread("maas-cli")
        return self._runner

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.endpoints.channel("registry"), runner=self.runner)
        return self._registry

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            self._trainer = Trainer(self.endpoints.channel("trainer"), runner=self.runner)
        return self._trainer

    @property
    def inference(self) -> Inference:
        if self._inference is None:
            from maas.client.inference import Inference

            self._inference = Inference(self.endpoints.channel("inference"), runner=self.runner)
        return self._inference

    def opened(self) -> list[str]:
        """The services this command has opened a client for (where a failure can come from)."""
        clients = (("registry", self._registry), ("trainer", self._trainer), ("inference", self._inference))
        return [name for name, client in clients if client is not None]

    def close(self) -> None:
        for client in (self._registry, self._trainer, self._inference):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing must never mask the command's own outcome
                    pass
        if self._runner is not None:
            self._runner.stop()
