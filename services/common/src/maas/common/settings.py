"""Settings shared by every service's server.

Each service subclasses `ServerSettings` with its own env prefix
(`MAAS_REGISTRY_`, `MAAS_TRAINER_`, `MAAS_INFERENCE_`). One object is built
per process in `__main__` and passed down; nothing reads the environment
anywhere else. Every field carries a description: the README's settings table
is generated from them.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
