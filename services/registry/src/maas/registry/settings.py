"""Settings of the registry service (env prefix MAAS_REGISTRY_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from maas.common.settings import ServerSettings


class RegistrySettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_REGISTRY_", extra="ignore")

    port: int = Field(50051, ge=0, le=65535, description="gRPC port of the registry.")
    metrics_port: int = Field(9101, ge=0, le=65535, description="Prometheus /metrics port; 0 disables it.")
    data_dir: Path = Field(
        Path(".maas"), description="State directory for the embedded defaults (SQLite file, artifacts)."
    )
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL of the database (sqlite:///... or postgresql://...); "
        "default: a SQLite file under data_dir.",
    )
    artifact_root: Path | None = Field(None, description="Directory of artifact blobs; default: data_dir/artifacts.")
    max_artifact_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest artifact accepted; larger uploads get RESOURCE_EXHAUSTED."
    )
    trusted_formats: bool = Field(
        False,
        description="Accept formats that carry code (TorchScript, torch.export, pickle). Off: "
        "only safetensors and ONNX.",
    )
    auto_migrate: bool = Field(True, description="Apply database migrations at start.")
    db_pool_size: int = Field(8, ge=1, le=128, description="Database connections (and worker threads).")
    db_connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a database connection.")
    event_poll_interval: float = Field(
        0.25, gt=0, description="Seconds between polls of the event log for other replicas' events."
    )
    health_interval: float = Field(2.0, gt=0, description="Seconds between database health probes.")
    stale_upload_seconds: float = Field(
        3600.0,
        ge=0,
        description="Abandoned partial uploads older than this are removed (swept at start and every "
        "quarter of this, 0.25 s to 10 min).",
    )
    pending_version_seconds: float = Field(
        3600.0,
        gt=0,
        description='A PENDING version becomes FAILED ("upload abandoned") once this long has passed since '
        "it was created and since its upload last received bytes: an upload that keeps sending is never "
        "cut, one idle this long is ended and its bytes removed (checked every quarter of this, 0.25 s to "
        "10 min).",
    )

    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    def resolved_artifact_root(self) -> Path:
        return self.artifact_root if self.artifact_root is not None else self.data_dir / "artifacts"
