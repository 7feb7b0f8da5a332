"""`maas deploy NAME --target REF[:WEIGHT] ...` and `maas deployments ls|show|rm|promote|rollback`.

`maas deploy` declares the whole deployment: it creates it, or replaces its
spec (so an option not given is the replicas' own setting again), and each
change is a new generation that the inference replicas follow. `promote` and
`rollback` end a canary in one step each: they read the deployment and write
the changed spec only if nothing changed it in between (its generation).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from maas.cli.context import Context
from maas.cli.output import fields, print_json, table, to_dict, when
from maas.cli.refs import format_name
from maas.client.deployments import SERVABLE, deployment_spec, promoted, rolled_back, split_weight
from maas.common.errors import InvalidArgument, MaasError, NotFound
from maas.v1 import registry_pb2 as rpb


def _targets_text(d: rpb.Deployment) -> str:
    return ", ".join(f"{t.ref} {t.weight}%" for t in d.spec.targets)


def _shadow_text(d: rpb.Deployment) -> str:
    if not d.spec.HasField("shadow"):
        return ""
    shadow = d.spec.shadow
    return shadow.ref + ("" if shadow.sample_percent == 100 else f" ({shadow.sample_percent}% of requests)")


def _options_text(d: rpb.Deployment) -> str:
    o = d.spec.options
    parts = []
    if o.max_batch_size:
        parts.append(f"max batch {o.max_batch_size}")
    if o.HasField("max_queue_delay_us"):
        parts.append(f"queue delay {o.max_queue_delay_us} us")
    if o.instances:
        parts.append(f"{o.instances} instances")
    if o.device:
        parts.append(f"device {o.device}")
    if o.format:
        parts.append(f"format {format_name(o.format)}")
    if o.preferred_batch_sizes:
        parts.append("preferred batches " + ",".join(str(s) for s in o.preferred_batch_sizes))
    if o.max_queue_size:
        parts.append(f"queue of {o.max_queue_size}")
    return ", ".join(parts) or "the replicas' own settings"


def replica_state(d: rpb.Deployment, r: rpb.ReplicaStatus) -> str:
    """converged, behind (it serves an older generation), failed, or loading."""
    if r.generation < d.generation:
        return "behind"
    current = [t for t in r.targets if t.state != rpb.TARGET_STATE_DRAINING]
    if any(t.state == rpb.TARGET_STATE_FAILED for t in current):
        return "failed"
    wanted = {t.ref for t in d.spec.targets} | ({d.spec.shadow.ref} if d.spec.HasField("shadow") else set())
    ready = {t.ref for t in current if t.state == rpb.TARGET_STATE_READY}
    return "converged" if wanted <= ready else "loading"


def _state_name(state: int) -> str:
    return rpb.TargetState.Name(state).removeprefix("TARGET_STATE_").lower()  # type: ignore[arg-type]


def _replica_targets(r: rpb.ReplicaStatus) -> str:
    def one(t: rpb.TargetStatus) -> str:
        served = f"{t.ref}" + (f" (v{t.version})" if t.version else "") + (" shadow" if t.shadow else "")
        return f"{served} {_state_name(t.state)}" + (f": {t.reason}" if t.reason else "")

    return "; ".join(one(t) for t in r.targets)


def deploy(args: argparse.Namespace, ctx: Context) -> int:
    targets = list(args.target or [])
    for canary in args.canary or []:
        if split_weight(canary, "--canary")[1] is None:
            raise InvalidArgument(f"--canary: give its share as REF:PERCENT (e.g. {canary}:10)")
        targets.append(canary)
    spec = deployment_spec(
        targets,
        shadow=args.shadow,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        device=args.device or "",
        format=args.format,
        preferred_batch_sizes=args.preferred_batch_size or (),
        max_queue_size=args.max_queue_size,
    )
    return _declared(ctx, ctx.registry.deploy(args.name, spec, args.generation))


def _declared(ctx: Context, deployment: rpb.Deployment) -> int:
    if ctx.json:
        print_json(to_dict(deployment))
        return 0
    shadow = _shadow_text(deployment)
    print(
        f"deployment {deployment.name} at generation {deployment.generation}: {_targets_text(deployment)}"
        + (f"; shadow {shadow}" if shadow else "")
    )
    return 0


def promote(args: argparse.Namespace, ctx: Context) -> int:
    return _rollout(args, ctx, promoted)


def rollback(args: argparse.Namespace, ctx: Context) -> int:
    return _rollout(args, ctx, rolled_back)


def _rollout(args: argparse.Namespace, ctx: Context, change: Callable[[rpb.DeploymentSpec, str | None], Any]) -> int:
    """Read, change, write back conditionally: ABORTED if another change came in between."""
    d = ctx.registry.get_deployment(args.name)
    try:
        spec = change(d.spec, args.target)
    except MaasError as exc:
        raise type(exc)(f"deployment {d.name}: {exc.message}") from None
    return _declared(ctx, ctx.registry.deploy(d.name, spec, args.generation or d.generation))


def ls(args: argparse.Namespace, ctx: Context) -> int:
    found = list(ctx.registry.deployments(args.prefix or ""))
    if ctx.json:
        print_json([to_dict(d) for d in found])
        return 0
    rows = []
    for d in found:
        # A list carries each replica's generation, not its targets: `show` says which have converged.
        at = sum(r.generation == d.generation for r in d.replicas)
        replicas = f"{at}/{len(d.replicas)} at generation {d.generation}" if d.replicas else ""
        rows.append(
            (d.name, d.generation, _targets_text(d), _shadow_text(d), replicas, when(d.updated_at or d.created_at))
        )
    table(["DEPLOYMENT", "GEN", "TARGETS", "SHADOW", "REPLICAS", "UPDATED"], rows, "no deployments")
    return 0


def _resolved(ctx: Context, ref: str) -> int | None:
    """The version `ref` resolves to now (None: it does not resolve any more)."""
    try:
        return int(ctx.registry.resolve(ref).version)
    except NotFound:
        return None


def show(args: argparse.Namespace, ctx: Context) -> int:
    d = ctx.registry.get_deployment(args.name)
    refs = [t.ref for t in d.spec.targets] + ([d.spec.shadow.ref] if d.spec.HasField("shadow") else [])
    resolved = {ref: _resolved(ctx, ref) for ref in refs}
    if ctx.json:
        doc = to_dict(d)
        doc["resolved"] = resolved
        doc["replica_states"] = {r.replica: replica_state(d, r) for r in d.replicas}
        print_json(doc)
        return 0
    fields(
        [
            ("deployment", d.name),
            ("generation", d.generation),
            ("shadow", _shadow_text(d)),
            ("options", _options_text(d)),
            ("created", when(d.created_at)),
            ("updated", when(d.updated_at)),
        ]
    )
    print()

    def now(ref: str) -> str:
        version = resolved[ref]
        return f"version {version}" if version is not None else "(does not resolve)"

    rows = [(t.ref, f"{t.weight}%", now(t.ref)) for t in d.spec.targets]
    if d.spec.HasField("shadow"):
        rows.append((d.spec.shadow.ref, "shadow", now(d.spec.shadow.ref)))
    table(["TARGET", "WEIGHT", "RESOLVES TO"], rows)
    print()
    replica_rows = [
        (r.replica, r.generation, replica_state(d, r), _replica_targets(r), when(r.reported_at)) for r in d.replicas
    ]
    table(["REPLICA", "GEN", "STATE", "TARGETS", "REPORTED"], replica_rows, "no replica has reported yet")
    return 0


def rm(args: argparse.Namespace, ctx: Context) -> int:
    ctx.registry.delete_deployment(args.name, args.generation)
    if ctx.json:
        print_json({"deployment": args.name, "deleted": True})
    else:
        print(f"deleted deployment {args.name}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser(
        "deploy",
        parents=[common],
        help="declare what a served name serves (creates the deployment, or replaces its spec)",
        description="Targets are MODEL@ALIAS (follows the alias) or MODEL/VERSION (pinned), each with a share of "
        "the traffic in percent; the shares sum to 100, and targets without one share what is left. "
        "Options not given are the inference replicas' own settings.",
    )
    c.add_argument("name", metavar="NAME", help="the served name")
    c.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="REF[:PERCENT]",
        help="a target (repeatable), e.g. digits@production or digits/7:10",
    )
    c.add_argument("--canary", action="append", metavar="REF:PERCENT", help="a target with its share, e.g. digits/7:10")
    c.add_argument(
        "--shadow",
        metavar="REF[:PERCENT]",
        help="gets a copy of requests (all, or PERCENT of them); its answers are compared, never returned",
    )
    c.add_argument("--max-batch-size", type=int, default=0, metavar="N", help="most rows one execution takes")
    c.add_argument("--max-queue-delay-us", type=int, metavar="US", help="longest a request waits for its batch")
    c.add_argument("--instances", type=int, default=0, metavar="N", help="executions of one version at once")
    c.add_argument(
        "--preferred-batch-size",
        type=int,
        action="append",
        metavar="N",
        help="a batch size sent at once when reached (repeatable)",
    )
    c.add_argument("--max-queue-size", type=int, default=0, metavar="N", help="requests one version may hold queued")
    c.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    c.add_argument("--format", choices=SERVABLE, help="the artifact served: onnx (onnxruntime) or safetensors (torch)")
    c.add_argument(
        "--generation",
        type=int,
        default=0,
        metavar="N",
        help="only if the deployment is at generation N (refused if it changed since)",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=deploy)

    p = sub.add_parser("deployments", help="deployments: what the inference replicas serve")
    deployments = p.add_subparsers(dest="action", required=True, metavar="{ls,show,rm,promote,rollback}")
    c = deployments.add_parser("ls", parents=[common], help="list deployments")
    c.add_argument("--prefix", help="only names starting with this")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=ls)
    c = deployments.add_parser("show", parents=[common], help="a deployment, its targets and its replicas' state")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=show)
    c = deployments.add_parser("rm", parents=[common], help="delete a deployment (the models stay)")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--generation", type=int, default=0, metavar="N", help="only if it is at generation N")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=rm)
    for action, func, says in (
        ("promote", promote, "the canary becomes the only target (100%%)"),
        ("rollback", rollback, "the canary is removed; its share goes to the heaviest target left"),
    ):
        c = deployments.add_parser(action, parents=[common], help=f"end a canary: {says}")
        c.add_argument("name", metavar="NAME")
        c.add_argument("--target", metavar="REF", help="the canary (default: the lightest target)")
        c.add_argument(
            "--generation", type=int, default=0, metavar="N", help="only if it is at generation N (default: as read)"
        )
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=func)
