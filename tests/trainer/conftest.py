"""Fixtures for the trainer: a real registry and a real trainer on port 0."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from maas.common.server import RunningServer, start_server
from maas.trainer.app import TrainerApp
from maas.trainer.settings import TrainerSettings
from maas.v1 import registry_pb2_grpc, trainer_pb2_grpc
from maas.v1 import trainer_pb2 as tpb

TERMINAL = {tpb.JOB_STATE_SUCCEEDED, tpb.JOB_STATE_FAILED, tpb.JOB_STATE_CANCELLED}


def trainer_settings(data_dir: Path, registry_address: str, **overrides: Any) -> TrainerSettings:
    values: dict[str, Any] = {
        "port": 0,
        "metrics_port": 0,
        "data_dir": data_dir,
        "registry_address": registry_address,
        "registry_timeout": 10.0,
        "default_threads": 1,
        "poll_interval": 0.2,
        "metrics_sync_interval": 0.5,
        "cancel_grace_seconds": 3.0,
        "grace_seconds": 1.0,
        "verify_datasets": False,
    }
    values.update(overrides)
    return TrainerSettings(**values)


@dataclass
class Suite:
    registry: RunningServer
    trainer: RunningServer
    trainer_stub: trainer_pb2_grpc.TrainerServiceStub
    registry_stub: registry_pb2_grpc.RegistryServiceStub
    data_dir: Path

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    @property
    def data_root(self) -> Path:
        return self.data_dir / "datasets"


@pytest.fixture
async def suite(request: pytest.FixtureRequest, sqlite_registry: RunningServer, tmp_path: Path) -> AsyncIterator[Suite]:
    overrides = getattr(request, "param", {}) or {}
    settings = trainer_settings(tmp_path / "trainer", sqlite_registry.address, **overrides)
    trainer = await start_server(settings, TrainerApp(settings))
    async with (
        grpc.aio.insecure_channel(trainer.address) as tch,
        grpc.aio.insecure_channel(sqlite_registry.address) as rch,
    ):
        yield Suite(
            sqlite_registry,
            trainer,
            trainer_pb2_grpc.TrainerServiceStub(tch),
            registry_pb2_grpc.RegistryServiceStub(rch),
            tmp_path / "trainer",
        )
    await trainer.stop(1)


def digits_spec(**kwargs: Any) -> tpb.JobSpec:
    base: dict[str, Any] = {
        "model": tpb.ModelSpec(name="mlp"),
        "dataset": tpb.DatasetSpec(name="digits"),
        "epochs": 8,
        "batch_size": 32,
        "optimizer": tpb.OptimizerSpec(name="sgd", lr=0.05),
        "seed": 1,
    }
    base.update(kwargs)
    return tpb.JobSpec(**base)


def long_spec(epochs: int = 60, **kwargs: Any) -> tpb.JobSpec:
    """A job that runs long enough to be interrupted (several seconds)."""
    spec = tpb.JobSpec(
        model=tpb.ModelSpec(name="lenet"),
        dataset=tpb.DatasetSpec(name="fake"),
        epochs=epochs,
        batch_size=8,
        seed=3,
        **kwargs,
    )
    spec.dataset.args.update({"num_samples": 1200, "image_size": 16, "num_classes": 4})
    return spec


async def wait_job(stub: Any, job_id: str, *, timeout: float = 180.0, until: Any = None) -> tpb.Job:
    """Poll until the job is terminal (or `until(job)` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await stub.GetJob(tpb.GetJobRequest(job_id=job_id))
        if (until is not None and until(job)) or (until is None and job.state in TERMINAL):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {tpb.JobState.Name(job.state)} / {job.phase}: {job.reason}")
        await asyncio.sleep(0.2)


async def collect(stub: Any, job_id: str, after_seq: int = 0, limit: int | None = None) -> list[tpb.JobEvent]:
    events = []
    call = stub.WatchJob(tpb.WatchJobRequest(job_id=job_id, after_seq=after_seq))
    async for event in call:
        events.append(event)
        if limit is not None and len(events) >= limit:
            call.cancel()
            break
    return events


def logs(events: list[tpb.JobEvent]) -> list[str]:
    return [e.log.message for e in events if e.WhichOneof("kind") == "log"]


def write_cifar10(root: Path, per_batch: int = 60, seed: int = 0) -> None:
    """A small data set in torchvision's CIFAR-10 on-disk layout (cifar-10-batches-py)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(name: str) -> None:
        labels = rng.integers(0, 10, per_batch)
        # Learnable: the class sets the image's mean brightness.
        base = (labels * 20 + 30).reshape(-1, 1)
        data = np.clip(base + rng.normal(0, 20, (per_batch, 3072)), 0, 255).astype(np.uint8)
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": name}, f)

    for i in range(1, 6):
        batch(f"data_batch_{i}")
    batch("test_batch")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch}, f)
