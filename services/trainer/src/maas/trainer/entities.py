"""Domain entities of the trainer: job specs, jobs, events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from maas.trainer.jobspec import JobSpec


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Phase(enum.StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    TRAINING = "training"
    OPTIMIZING = "optimizing"
    RETRYING = "retrying"
    INTERRUPTED = "interrupted"
    REGISTERING = "registering"
    DONE = "done"


@dataclass(frozen=True)
class Job:
    job_id: str
    spec: JobSpec  # the resolved spec (maas.trainer.spec.resolve)
    state: JobState
    phase: str
    reason: str
    attempt: int
    epoch: int
    epochs: int
    metrics: dict[str, float]
    run_id: str
    registered_model: str
    registered_version: int
    promoted_alias: str
    idempotency_key: str
    created_at_ms: int
    started_at_ms: int
    finished_at_ms: int
    last_seq: int
    owner: str = ""
    cancel_requested: bool = False
    synced_seq: int = 0


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event log; `kind` is state, step, epoch or log."""

    job_id: str
    seq: int
    time_ms: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    items: list[Job]
    next_page_token: str = ""
