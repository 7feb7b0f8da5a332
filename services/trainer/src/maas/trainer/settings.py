"""Settings of the trainer service (env prefix MAAS_TRAINER_)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from maas.common.settings import RegistryConnection, ServerSettings


class TrainerSettings(ServerSettings, RegistryConnection):
    model_config = SettingsConfigDict(env_prefix="MAAS_TRAINER_", extra="ignore")

    port: int = Field(50052, ge=0, le=65535, description="gRPC port of the trainer.")
    metrics_port: int = Field(9102, ge=0, le=65535, description="Prometheus /metrics port; 0 disables it.")
    data_dir: Path = Field(Path(".maas"), description="State directory (SQLite file, job directories).")
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL of the job database; default: a SQLite file under data_dir."
    )
    data_root: Path | None = Field(
        None, description="Where data sets live (cifar10/, mnist/, image folders); default: data_dir/datasets."
    )
    allow_download: bool = Field(False, description="Let torchvision download missing data sets into data_root.")
    verify_datasets: bool = Field(
        True,
        description="Load torchvision data sets only if their files match the published checksums "
        "(CIFAR-10's format is pickle: off means the data root is trusted as code).",
    )
    max_concurrent_jobs: int = Field(2, ge=1, le=256, description="Jobs running at once; the rest wait in FIFO order.")
    max_world_size: int = Field(8, ge=1, le=1024, description="Largest torch.distributed group a job may ask for.")
    default_threads: int = Field(
        0, ge=0, le=256, description="torch intra-op threads per worker process when a job sets none (0: torch's)."
    )
    warm_workers: int = Field(
        1, ge=0, le=16, description="Pre-started worker processes (torch imported) for single-process jobs."
    )
    max_runtime_seconds: int = Field(86_400, ge=1, description="Upper bound of any job's run time.")
    replica_id: str = Field("", description="Identity of this trainer among replicas (default: host name + data_dir).")
    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between heartbeats of running jobs.")
    stale_after: float = Field(
        30.0, gt=0, description="A running job whose owner has not beaten for this long is taken over."
    )
    poll_interval: float = Field(0.5, gt=0, description="Seconds between polls of the job queue and event log.")
    cancel_grace_seconds: float = Field(5.0, ge=0, description="SIGTERM-to-SIGKILL grace when stopping workers.")
    metrics_sync_interval: float = Field(2.0, gt=0, description="Seconds between batched metric uploads.")
    onnx_tolerance: float = Field(
        1e-3,
        ge=0,
        description="Largest |onnxruntime - torch| on the validation batch for a trained version's ONNX export; "
        "over it the export is dropped (the version is served from safetensors).",
    )
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="Where workers train: auto, cpu or cuda.")

    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'trainer.db').resolve()}"

    def resolved_data_root(self) -> Path:
        return (self.data_root if self.data_root is not None else self.data_dir / "datasets").resolve()

    def jobs_dir(self) -> Path:
        return (self.data_dir / "jobs").resolve()

    def resolved_replica_id(self) -> str:
        if self.replica_id:
            return self.replica_id
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()[:40]}-{digest}"
