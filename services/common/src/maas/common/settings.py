"""Settings shared by every service's server.

Each service subclasses `ServerSettings` with its own env prefix
(`MAAS_REGISTRY_`, `MAAS_TRAINER_`, `MAAS_INFERENCE_`). One object is built
per process in `__main__` and passed down; nothing reads the environment
anywhere else. Every field carries a description: the README's settings table
is generated from them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from maas.common.auth import MIN_TOKEN_CHARS
from maas.common.clients.base import ChannelConfig


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    host: str = Field(
        "127.0.0.1",
        description="Address the gRPC server binds to; 0.0.0.0 to accept remote clients.",
    )
    port: int = Field(0, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics HTTP port; 0 disables the endpoint.")
    metrics_host: str = Field("127.0.0.1", description="Address the /metrics endpoint binds to.")
    grace_seconds: float = Field(10.0, ge=0, description="On SIGTERM: how long in-flight calls may take to finish.")
    access_log: bool = Field(False, description="Log one line per RPC (method, status, time, peer).")
    log_level: str = Field("INFO", description="Python log level of the service.")
    max_message_bytes: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest gRPC message the server accepts or sends, in bytes.",
    )
    reflection: bool = Field(True, description="Serve gRPC server reflection (for grpcurl and the like).")
    auth_tokens: SecretStr | None = Field(
        None,
        description="Bearer tokens and their scope (read, replica, write or admin) as token:scope,token:scope. "
        "With tokens set, every call but grpc.health.v1 needs one. "
        f"Each token needs at least {MIN_TOKEN_CHARS} characters: a shorter one is refused at start.",
    )
    auth_tokens_file: Path | None = Field(None, description="A file of `TOKEN SCOPE` lines, added to auth_tokens.")
    allow_insecure: bool = Field(
        False,
        description="Serve on a non-loopback address without tokens or without TLS. Off: such a start is refused.",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain: serve gRPC (and /metrics) over TLS.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle: require client certificates signed by it (mutual TLS)."
    )

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


class RegistryConnection(BaseSettings):
    """How a service reaches the registry (mixed into the trainer's and inference's settings)."""

    registry_address: str = Field("127.0.0.1:50051", description="host:port of the registry.")
    registry_timeout: float = Field(30.0, gt=0, description="Deadline in seconds of each registry call.")
    registry_token: SecretStr | None = Field(None, description="Bearer token this service presents to the registry.")
    registry_ca_file: Path | None = Field(
        None, description="PEM CA bundle: reach the registry over TLS, verified by it."
    )
    registry_cert_file: Path | None = Field(
        None, description="PEM client certificate for mutual TLS with the registry."
    )
    registry_key_file: Path | None = Field(None, description="PEM private key of registry_cert_file.")

    @model_validator(mode="after")
    def _client_certificate_needs_tls(self) -> RegistryConnection:
        # Without a CA file the channel is plaintext: a configured certificate would silently go unused.
        if (self.registry_cert_file is None) != (self.registry_key_file is None):
            raise ValueError("registry_cert_file and registry_key_file must be set together")
        if self.registry_cert_file is not None and self.registry_ca_file is None:
            raise ValueError("a client certificate for the registry needs registry_ca_file (TLS)")
        return self

    def registry_channel(self) -> ChannelConfig:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return ChannelConfig(
            self.registry_address,
            timeout=self.registry_timeout,
            tls=self.registry_ca_file is not None,
            root_certificates=read(self.registry_ca_file),
            certificate_chain=read(self.registry_cert_file),
            private_key=read(self.registry_key_file),
            token=self.registry_token.get_secret_value() if self.registry_token is not None else None,
        )
