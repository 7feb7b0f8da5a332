"""`maas jobs ls|show|watch|logs|cancel`."""

from __future__ import annotations

import argparse
import time
from typing import Any

from maas.cli.context import Context
from maas.cli.output import fields, metrics_text, print_json, print_json_line, table, to_dict, when
from maas.cli.progress import duration
from maas.cli.watch import job_title, watch
from maas.client.trainer import JOB_STATES, TERMINAL, state_name
from maas.common.errors import InvalidArgument
from maas.v1 import trainer_pb2 as pb


def _elapsed(job: pb.Job) -> str:
    if not job.started_at.seconds:
        return ""
    end = job.finished_at.seconds or time.time()
    return duration(end - job.started_at.seconds)


def ls(args: argparse.Namespace, ctx: Context) -> int:
    states = []
    for name in args.state or []:
        if name.lower() not in JOB_STATES:
            raise InvalidArgument(f"--state: one of {', '.join(JOB_STATES)}")
        states.append(JOB_STATES[name.lower()])
    jobs: list[pb.Job] = []
    for job in ctx.trainer.jobs(states):
        jobs.append(job)
        if args.limit and len(jobs) >= args.limit:
            break
    if ctx.json:
        print_json([to_dict(j) for j in jobs])
        return 0
    rows = [
        (
            j.job_id,
            state_name(j.state),
            j.phase,
            job_title(j.spec),
            f"{j.epoch}/{j.epochs}",
            f"{j.metrics['val_accuracy']:.4f}" if "val_accuracy" in j.metrics else "",
            f"{j.registered_model}/{j.registered_version}" if j.registered_version else "",
            when(j.created_at),
            _elapsed(j),
        )
        for j in jobs
    ]
    table(["JOB", "STATE", "PHASE", "WHAT", "EPOCH", "VAL_ACC", "VERSION", "CREATED", "TOOK"], rows, "no jobs")
    return 0


def show(args: argparse.Namespace, ctx: Context) -> int:
    job = ctx.trainer.get(args.job)
    if ctx.json:
        print_json(to_dict(job))
        return 0
    s = job.spec
    fields(
        [
            ("job", job.job_id),
            ("state", f"{state_name(job.state)} ({job.phase})" if job.phase else state_name(job.state)),
            ("reason", job.reason),
            ("what", job_title(s)),
            ("epochs", f"{job.epoch}/{job.epochs}"),
            ("optimizer", f"{s.optimizer.name} lr {s.optimizer.lr:g}" if s.optimizer.name else ""),
            ("batch size", s.batch_size or ""),
            ("attempt", job.attempt or ""),
            ("metrics", metrics_text(dict(job.metrics))),
            ("run", job.run_id),
            ("version", f"{job.registered_model}/{job.registered_version}" if job.registered_version else ""),
            ("promoted", job.promoted_alias),
            ("created", when(job.created_at)),
            ("started", when(job.started_at)),
            ("finished", when(job.finished_at)),
            ("took", _elapsed(job)),
        ]
    )
    return 0


def watch_cmd(args: argparse.Namespace, ctx: Context) -> int:
    job = ctx.trainer.get(args.job)
    return watch(ctx, job.job_id, title=job_title(job.spec))


def logs(args: argparse.Namespace, ctx: Context) -> int:
    """Log lines and state changes; up to now, or (--follow) until the job ends."""
    job = ctx.trainer.get(args.job)
    until = None if args.follow else job.last_seq
    if until == 0:
        return 0
    stream = ctx.trainer.follow(job.job_id)
    for event in stream:
        kind = event.WhichOneof("kind")
        if ctx.json:
            if kind in ("log", "state") or args.all:
                print_json_line(to_dict(event))
        elif kind == "log":
            print(f"{when(event.time)} {event.log.level:<7} {event.log.message}")
        elif kind == "state":
            reason = f": {event.state.reason}" if event.state.reason else ""
            print(f"{when(event.time)} STATE   {state_name(event.state.state)} ({event.state.phase}){reason}")
        elif kind == "epoch" and args.all:
            e = event.epoch
            print(f"{when(event.time)} EPOCH   {e.epoch}/{e.epochs} {metrics_text(dict(e.metrics))}")
        if until is not None and event.seq >= until:
            stream.close()
            break
    return 0


def cancel(args: argparse.Namespace, ctx: Context) -> int:
    """Print the state after the cancel: a running job stops in its own time (SIGTERM, grace, SIGKILL)."""
    job = ctx.trainer.cancel(args.job)
    if job.state not in TERMINAL and args.wait > 0:
        job = ctx.trainer.wait(job.job_id, job.last_seq, within=args.wait)
    if ctx.json:
        print_json(to_dict(job))
    else:
        pending = "" if job.state in TERMINAL else " (cancel requested, still stopping)"
        print(f"job {job.job_id}: {state_name(job.state)}{pending}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("jobs", help="list, inspect, follow and cancel training jobs")
    jobs = p.add_subparsers(dest="action", required=True, metavar="{ls,show,watch,logs,cancel}")
    c = jobs.add_parser("ls", parents=[common], help="list jobs, newest first")
    c.add_argument("--state", action="append", metavar="STATE", help="queued, running, succeeded, failed, cancelled")
    c.add_argument("--limit", type=int, default=50, help="at most this many (0: all; default 50)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=ls)
    c = jobs.add_parser("show", parents=[common], help="one job's state, metrics and result")
    c.add_argument("job")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=show)
    c = jobs.add_parser("watch", parents=[common], help="live progress of a job until it ends")
    c.add_argument("job")
    c.add_argument("--json", action="store_true", help="events as JSON lines")
    c.set_defaults(func=watch_cmd)
    c = jobs.add_parser("logs", parents=[common], help="a job's log lines and state changes")
    c.add_argument("job")
    c.add_argument("-f", "--follow", action="store_true", help="keep following until the job ends")
    c.add_argument("--all", action="store_true", help="epoch results too (with --json: every event)")
    c.add_argument("--json", action="store_true", help="events as JSON lines")
    c.set_defaults(func=logs)
    c = jobs.add_parser("cancel", parents=[common], help="stop a queued or running job")
    c.add_argument("job")
    c.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for a running job to stop before printing its state (default 60; 0: print at once)",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cancel)
