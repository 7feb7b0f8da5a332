"""Protobuf <-> domain conversions for the trainer."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from maas.common import errors, plugins
from maas.common.structs import from_struct
from maas.trainer import entities, jobspec
from maas.v1 import trainer_pb2 as pb


def to_timestamp(ms: int) -> timestamp_pb2.Timestamp | None:
    if not ms:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _set(message: Any, *names: str) -> dict[str, Any]:
    """The named fields of a proto message that are set: proto3 cannot tell zero from unset, so zero is unset
    and the typed spec's default applies."""
    return {name: getattr(message, name) for name in names if getattr(message, name)}


def from_spec(spec: pb.JobSpec) -> dict[str, Any]:
    """The request's spec as a plain document for maas.trainer.jobspec.parse (unset fields left out)."""
    raw: dict[str, Any] = {
        "model": {"name": spec.model.name, "args": from_struct(spec.model.args, "model.args")},
        "dataset": {
            "name": spec.dataset.name,
            "path": spec.dataset.path,
            "args": from_struct(spec.dataset.args, "dataset.args"),
        },
        "optimizer": _set(spec.optimizer, "name", "lr", "momentum", "weight_decay"),
        "schedule": _set(spec.schedule, "name", "step_size", "gamma"),
        **_set(
            spec,
            "epochs",
            "batch_size",
            "validation_split",
            "seed",
            "world_size",
            "max_runtime_seconds",
            "register_as",
            "threads",
            "description",
        ),
        "tags": dict(spec.tags),
    }
    if spec.HasField("max_retries"):
        raw["max_retries"] = spec.max_retries
    if spec.HasField("pretrained"):
        raw["pretrained"] = _set(spec.pretrained, "path", "sha256") or {"path": ""}
    if spec.freeze_backbone:
        raw["freeze_backbone"] = True
    if spec.HasField("pretrained_checkpoint"):
        ckpt = spec.pretrained_checkpoint
        raw["pretrained_checkpoint"] = {"path": ckpt.path, "sha256": dict(ckpt.sha256)}
    if spec.early_stopping.metric:
        # proto3 cannot tell "false" from "unset": false means "the metric's natural direction".
        raw["early_stopping"] = _set(spec.early_stopping, "metric", "patience", "min_delta", "higher_is_better")
    if spec.promotion.alias:
        raw["promotion"] = _set(spec.promotion, "alias", "metric", "threshold", "higher_is_better")
    return raw


def from_optimize(spec: pb.OptimizeSpec) -> dict[str, Any]:
    """The request's OptimizeSpec as a plain document for maas.trainer.jobspec.parse_optimize."""
    raw: dict[str, Any] = {
        "source": spec.source,
        "formats": list(spec.formats),
        **_set(spec, "quantize", "method", "register_as", "calibration_batches"),
    }
    if spec.dataset.name:
        raw["dataset"] = {
            "name": spec.dataset.name,
            "path": spec.dataset.path,
            "args": from_struct(spec.dataset.args, "spec.dataset.args"),
        }
    if spec.promotion.alias:
        raw["promotion"] = _set(spec.promotion, "alias", "metric", "threshold", "higher_is_better")
    return raw


def _promotion(rule: jobspec.Promotion) -> pb.PromotionRule:
    return pb.PromotionRule(
        alias=rule.alias, metric=rule.metric, threshold=rule.threshold, higher_is_better=rule.higher_is_better
    )


def _dataset(ds: jobspec.DatasetRef) -> pb.DatasetSpec:
    return pb.DatasetSpec(name=ds.name, path=ds.path, args=to_struct(ds.args))


def to_optimize(opt: jobspec.Optimization) -> pb.OptimizeSpec:
    """The stored optimization: its source pinned to the version the request named."""
    out = pb.OptimizeSpec(
        source=f"{opt.parent.model}/{opt.parent.version}",
        quantize=opt.quantize,
        method=opt.method,
        formats=opt.formats,
        register_as=opt.register_as,
        calibration_batches=opt.calibration_batches,
    )
    if opt.dataset is not None:
        out.dataset.CopyFrom(_dataset(opt.dataset))
    if opt.promotion is not None:
        out.promotion.CopyFrom(_promotion(opt.promotion))
    return out


def to_spec(spec: jobspec.JobSpec) -> pb.JobSpec:
    """The resolved spec, with every default filled in."""
    out = pb.JobSpec(
        dataset=_dataset(spec.dataset),
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        validation_split=spec.validation_split,
        seed=spec.seed,
        world_size=spec.world_size,
        max_runtime_seconds=spec.max_runtime_seconds,
        register_as=spec.register_as,
        max_retries=spec.max_retries,
        threads=spec.threads,
        description=spec.description,
        tags=spec.tags,
    )
    if spec.model is not None:
        out.model.CopyFrom(pb.ModelSpec(name=spec.model.name, args=to_struct(spec.model.args)))
    if spec.optimizer is not None:
        out.optimizer.CopyFrom(pb.OptimizerSpec(**spec.optimizer.model_dump()))
    if spec.schedule is not None:
        out.schedule.CopyFrom(pb.ScheduleSpec(**spec.schedule.model_dump()))
    if spec.early_stopping is not None:
        out.early_stopping.CopyFrom(pb.EarlyStopping(**spec.early_stopping.model_dump()))
    if spec.promotion is not None:
        out.promotion.CopyFrom(_promotion(spec.promotion))
    if spec.optimize is not None:
        out.optimize.CopyFrom(to_optimize(spec.optimize))
    checkpoint = spec.text.pretrained_checkpoint if spec.text is not None else None
    if checkpoint is not None:
        out.pretrained_checkpoint.CopyFrom(pb.PretrainedCheckpointSpec(path=checkpoint.path, sha256=checkpoint.sha256))
    if spec.pretrained is not None:
        out.pretrained.CopyFrom(pb.PretrainedSpec(path=spec.pretrained.path, sha256=spec.pretrained.sha256))
        out.freeze_backbone = spec.freeze_backbone
    return out


STATES = {s: pb.JobState.Value(f"JOB_STATE_{s.value}") for s in entities.JobState}


def from_state(value: int) -> entities.JobState:
    if value == pb.JOB_STATE_UNSPECIFIED or value not in pb.JobState.values():
        raise errors.InvalidArgument("states: unknown job state")
    return entities.JobState(pb.JobState.Name(value).removeprefix("JOB_STATE_"))


def to_job(job: entities.Job) -> pb.Job:
    return pb.Job(
        job_id=job.job_id,
        spec=to_spec(job.spec),
        state=STATES[job.state],  # type: ignore[arg-type]
        phase=job.phase,
        reason=job.reason,
        attempt=job.attempt,
        epoch=job.epoch,
        epochs=job.epochs,
        metrics=job.metrics,
        run_id=job.run_id,
        registered_model=job.registered_model,
        registered_version=job.registered_version,
        promoted_alias=job.promoted_alias,
        idempotency_key=job.idempotency_key,
        created_at=to_timestamp(job.created_at_ms),
        started_at=to_timestamp(job.started_at_ms),
        finished_at=to_timestamp(job.finished_at_ms),
        last_seq=job.last_seq,
    )


def to_event(event: entities.JobEvent) -> pb.JobEvent:
    out = pb.JobEvent(job_id=event.job_id, seq=event.seq, time=to_timestamp(event.time_ms))
    d = event.data
    if event.kind == "state":
        out.state.CopyFrom(
            pb.StateChange(
                state=STATES[entities.JobState(d["state"])],  # type: ignore[arg-type]
                phase=d.get("phase", ""),
                reason=d.get("reason", ""),
                attempt=int(d.get("attempt", 0)),
            )
        )
    elif event.kind == "step":
        out.step.CopyFrom(
            pb.StepProgress(
                epoch=int(d["epoch"]),
                step=int(d["step"]),
                steps_per_epoch=int(d["steps_per_epoch"]),
                global_step=int(d["global_step"]),
                loss=float(d["loss"]),
                lr=float(d["lr"]),
                samples_per_second=float(d["samples_per_second"]),
                eta_seconds=float(d["eta_seconds"]),
            )
        )
    elif event.kind == "epoch":
        out.epoch.CopyFrom(
            pb.EpochResult(
                epoch=int(d["epoch"]),
                epochs=int(d["epochs"]),
                metrics={k: float(v) for k, v in d["metrics"].items()},
                samples_per_second=float(d["samples_per_second"]),
                eta_seconds=float(d["eta_seconds"]),
                seconds=float(d["seconds"]),
            )
        )
    else:
        out.log.CopyFrom(pb.LogLine(level=str(d.get("level", "INFO")), message=str(d.get("message", ""))))
    return out


# --------------------------------------------------------------- catalog ---


def _to_argument(arg: plugins.Argument) -> pb.CatalogArgument:
    out = pb.CatalogArgument(
        name=arg.name,
        type=arg.type,
        required=arg.required,
        default_json="" if arg.required else json.dumps(arg.default),
        exclusive_minimum=arg.exclusive_minimum,
        exclusive_maximum=arg.exclusive_maximum,
        choices=[json.dumps(c) for c in arg.choices],
        description=arg.description,
        schema_json=json.dumps(arg.schema, sort_keys=True),
    )
    if arg.minimum is not None:
        out.minimum = arg.minimum
    if arg.maximum is not None:
        out.maximum = arg.maximum
    return out


def to_catalog_entry(entry: plugins.Entry) -> pb.CatalogEntry:
    origin = entry.origin
    out = pb.CatalogEntry(
        kind=entry.kind,
        name=entry.name,
        origin=pb.CatalogOrigin(
            builtin=origin.builtin, distribution=origin.distribution, version=origin.version, target=entry.target
        ),
        available=entry.available,
        unavailable_reason=entry.reason,
    )
    plugin = entry.plugin
    if plugin is None:
        return out
    out.description = plugin.description
    out.arguments.extend(_to_argument(a) for a in plugins.describe(plugin.Args))
    if entry.kind == "architecture":
        out.inputs.extend(
            pb.CatalogInput(
                name=spec.name,
                datatype=spec.datatype,
                shape=list(spec.shape or ()),
                any_shape=spec.shape is None,
                description=spec.description,
            )
            for spec in plugin.inputs
        )
    else:
        out.path = plugin.path
    return out
