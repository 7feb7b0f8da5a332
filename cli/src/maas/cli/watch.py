"""Follow a job to its end and judge it: exit 0 only for SUCCEEDED with a READY version."""

from __future__ import annotations

import sys
from collections.abc import Callable

from maas.cli.context import Context
from maas.cli.output import print_json_line, to_dict
from maas.cli.progress import ProgressView
from maas.client.trainer import state_name
from maas.common import errors
from maas.v1 import registry_pb2 as rpb
from maas.v1 import trainer_pb2 as pb


def job_title(spec: pb.JobSpec) -> str:
    if spec.HasField("optimize"):
        what = " + ".join((["int8"] if spec.optimize.quantize else []) + list(spec.optimize.formats))
        return f"optimize {spec.optimize.source} ({what})" + (f" -> {spec.register_as}" if spec.register_as else "")
    text = f"{spec.model.name or '?'} on {spec.dataset.name or '?'}"
    return text + (f" -> {spec.register_as}" if spec.register_as else "")


def verdict(ctx: Context, job: pb.Job) -> tuple[bool, str, rpb.ModelVersion | None]:
    """(ok, one-line summary, registered version)."""
    if job.state != pb.JOB_STATE_SUCCEEDED:
        why = f": {job.reason}" if job.reason else ""
        return False, f"job {job.job_id} ended {state_name(job.state)}{why}", None
    if not job.spec.register_as:
        return True, f"job {job.job_id} SUCCEEDED (not registered)", None
    if not job.registered_version:
        return False, f"job {job.job_id} SUCCEEDED but registered no version of {job.spec.register_as}", None
    version = ctx.registry.get_version(job.registered_model, job.registered_version)
    ref = f"{version.model}/{version.version}"
    if version.status != rpb.VERSION_STATUS_READY:
        status = rpb.VersionStatus.Name(version.status).removeprefix("VERSION_STATUS_")
        return False, f"job {job.job_id} SUCCEEDED but {ref} is {status}: {version.status_reason}", version
    accuracy = version.metrics.get("val_accuracy")
    text = f"{ref} is READY" + (f" (val_accuracy {accuracy:.4f})" if accuracy is not None else "")
    if job.promoted_alias:
        text += f", promoted to {job.promoted_alias}"
    elif job.spec.promotion.alias:
        text += f", not promoted to {job.spec.promotion.alias} (the rule did not pass)"
    return True, text, version


Judge = Callable[[Context, pb.Job], tuple[bool, str, "rpb.ModelVersion | None"]]


def watch(ctx: Context, job_id: str, *, after_seq: int = 0, title: str = "", judge: Judge | None = None) -> int:
    view = None if ctx.json else ProgressView(job_id, title)
    retry = view.reconnecting if view is not None else _note_retry
    try:
        for event in ctx.trainer.follow(job_id, after_seq, on_retry=retry):
            if view is None:
                print_json_line(to_dict(event))
            else:
                view.on_event(event)
    except KeyboardInterrupt:
        if view is not None:
            view.close()
        print(f"maas: stopped watching; job {job_id} goes on (`maas jobs cancel {job_id}` stops it)", file=sys.stderr)
        return 130
    if view is not None:
        view.close()
    job = ctx.trainer.get(job_id)
    ok, summary, version = (judge or verdict)(ctx, job)
    if ctx.json:
        print_json_line(
            {"ok": ok, "summary": summary, "job": to_dict(job), "version": to_dict(version) if version else None}
        )
    elif ok:
        print(summary)
    if not ok:
        print(f"maas: {summary}", file=sys.stderr)
    return 0 if ok else 1


def _note_retry(error: errors.MaasError, delay: float) -> None:
    message = " ".join(error.message.split())[:160]
    print(f"maas: connection to the trainer lost ({message}); resuming in {delay:.1f}s", file=sys.stderr)
