"""Deployment specs from what a user types: 'digits@production', 'digits/7:10', a shadow, serving options.

A target is REF or REF:WEIGHT (a percent of the traffic). Targets given
without a weight share what the weighted ones leave of 100, evenly, the first
ones taking the odd percents: `digits@production` beside `digits/7:10` is 90.
The registry checks the rest (weights summing to 100, refs that resolve).
Refs never hold ':' (model names and aliases cannot), so the last ':' is the
weight's.

A rollout's two steps change a stored spec: `promoted` makes the canary the
only target (100%), `rolled_back` removes it and gives its share to the
heaviest target left. The canary is the target named, or else the lightest
one (refused when two are lightest); the shadow and the options stay.
"""

from __future__ import annotations

from collections.abc import Sequence

from maas.client.registry import format_number
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.v1 import registry_pb2 as pb

SERVABLE = ("safetensors", "onnx")


def split_weight(text: str, flag: str = "target") -> tuple[str, int | None]:
    """'digits/7:10' -> ('digits/7', 10); 'digits@production' -> ('digits@production', None)."""
    ref, sep, weight = text.rpartition(":")
    if not sep:
        return text, None
    if not weight.isdigit() or len(weight) > 3:
        raise InvalidArgument(f"{flag}: expected REF:PERCENT with a whole percent, got '{text[:60]}'")
    return ref, int(weight)


def targets_of(items: Sequence[tuple[str, int | None]]) -> list[pb.DeploymentTarget]:
    """Targets with the unweighted ones given their share of what is left of 100."""
    left = 100 - sum(w for _, w in items if w is not None)
    open_ = [i for i, (_, w) in enumerate(items) if w is None]
    if open_ and left < 0:
        raise InvalidArgument(f"the weights given sum to {100 - left}: nothing is left for the targets without one")
    share, odd = divmod(max(left, 0), len(open_)) if open_ else (0, 0)
    out = []
    for i, (ref, weight) in enumerate(items):
        if weight is None:
            weight = share + (1 if open_.index(i) < odd else 0)
        out.append(pb.DeploymentTarget(ref=ref, weight=weight))
    return out


def deployment_spec(
    targets: Sequence[str],
    *,
    shadow: str | None = None,
    max_batch_size: int = 0,
    max_queue_delay_us: int | None = None,
    instances: int = 0,
    device: str = "",
    format: str | None = None,
    preferred_batch_sizes: Sequence[int] = (),
    max_queue_size: int = 0,
) -> pb.DeploymentSpec:
    """A whole spec: `targets` as REF[:WEIGHT], `shadow` as REF[:PERCENT sampled]; options left out are the
    replicas' own settings. `format` is 'onnx' (onnxruntime) or 'safetensors' (torch)."""
    if format is not None and format.lower() not in SERVABLE:
        raise InvalidArgument(f"format: one of {', '.join(SERVABLE)}, not '{format[:40]}'")
    options = pb.ServingOptions(
        max_batch_size=max_batch_size,
        instances=instances,
        device=device,
        format=format_number(format.lower() if format else None),  # type: ignore[arg-type]
        preferred_batch_sizes=list(preferred_batch_sizes),
        max_queue_size=max_queue_size,
    )
    if max_queue_delay_us is not None:
        options.max_queue_delay_us = max_queue_delay_us
    spec = pb.DeploymentSpec(targets=targets_of([split_weight(t) for t in targets]), options=options)
    if shadow:
        ref, percent = split_weight(shadow, "shadow")
        spec.shadow.CopyFrom(pb.ShadowTarget(ref=ref, sample_percent=percent or 0))
    return spec


def canary_of(spec: pb.DeploymentSpec, ref: str | None = None) -> int:
    """The index of the canary among the spec's targets: the one `ref` names, or else the lightest."""
    refs = [t.ref for t in spec.targets]
    if len(refs) < 2:
        raise FailedPrecondition(f"it has one target ({', '.join(refs)}): no canary to promote or roll back")
    if ref:
        if ref not in refs:
            raise InvalidArgument(f"'{ref[:80]}' is not one of its targets ({', '.join(refs)})")
        return refs.index(ref)
    lightest = min(t.weight for t in spec.targets)
    found = [i for i, t in enumerate(spec.targets) if t.weight == lightest]
    if len(found) > 1:
        raise InvalidArgument(f"{' and '.join(refs[i] for i in found)} weigh the same: name the canary with --target")
    return found[0]


def promoted(spec: pb.DeploymentSpec, ref: str | None = None) -> pb.DeploymentSpec:
    """The spec with its canary as the only target, at 100%."""
    out = pb.DeploymentSpec()
    out.CopyFrom(spec)
    canary = spec.targets[canary_of(spec, ref)]
    del out.targets[:]
    out.targets.append(pb.DeploymentTarget(ref=canary.ref, weight=100))
    return out


def rolled_back(spec: pb.DeploymentSpec, ref: str | None = None) -> pb.DeploymentSpec:
    """The spec without its canary, whose share goes to the heaviest target left (the first of them)."""
    index = canary_of(spec, ref)
    rest = [pb.DeploymentTarget(ref=t.ref, weight=t.weight) for i, t in enumerate(spec.targets) if i != index]
    heaviest = max(range(len(rest)), key=lambda i: (rest[i].weight, -i))
    rest[heaviest].weight += spec.targets[index].weight
    out = pb.DeploymentSpec()
    out.CopyFrom(spec)
    del out.targets[:]
    out.targets.extend(rest)
    return out
