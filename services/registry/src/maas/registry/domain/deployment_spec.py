"""The rules a deployment's spec and a replica's report are held to, before any database work.

Weights are integer percents that must sum to exactly 100: a spec that says
90/20 is refused rather than quietly scaled, so what is stored is what the
user meant. The only target of a deployment may leave its weight 0 (it gets
100), and a shadow's sampled share 0 means every request. Refs are stored in
canonical form ('digits@production', 'digits/7'; 'digits' alone is
'digits@latest'), so two spellings of one ref cannot both be targets.
"""

from __future__ import annotations

import re
from dataclasses import replace

from maas.common import errors, names
from maas.registry import entities

MAX_TARGETS = 16
# Targets, the shadow and what a replica still drains of an older generation.
MAX_REPORTED_TARGETS = 2 * MAX_TARGETS + 2
MAX_REASON_CHARS = 1000
REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
DEVICE = re.compile(r"auto|cpu|cuda(?::[0-9]{1,2})?")
SERVABLE_FORMATS = (entities.ModelFormat.SAFETENSORS, entities.ModelFormat.ONNX)
MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_US = 10_000_000
MAX_INSTANCES = 64
MAX_PREFERRED_SIZES = 16
MAX_QUEUE_SIZE = 1_000_000


def spec(value: entities.DeploymentSpec) -> entities.DeploymentSpec:
    """The spec as it is stored: canonical refs, the defaults filled in; InvalidArgument naming the field."""
    if not value.targets:
        raise errors.InvalidArgument("spec.targets: at least one target")
    if len(value.targets) > MAX_TARGETS:
        raise errors.InvalidArgument(f"spec.targets: at most {MAX_TARGETS} targets")
    served: list[entities.DeploymentTarget] = []
    for i, target in enumerate(value.targets):
        field = f"spec.targets[{i}]"
        ref = str(names.parse_ref(target.ref, f"{field}.ref"))
        if any(t.ref == ref for t in served):
            raise errors.InvalidArgument(f"{field}.ref: '{ref}' is already a target")
        if not 0 <= target.weight <= 100:
            raise errors.InvalidArgument(f"{field}.weight: a percent, 0 to 100 (got {target.weight})")
        served.append(entities.DeploymentTarget(ref, target.weight))
    if len(served) == 1 and served[0].weight == 0:
        served[0] = entities.DeploymentTarget(served[0].ref, 100)
    total = sum(t.weight for t in served)
    if total != 100:
        raise errors.InvalidArgument(
            f"spec.targets: the weights sum to {total}; they are percents of the traffic and must sum to 100"
        )
    return entities.DeploymentSpec(tuple(served), _shadow(value.shadow, served), options(value.options))


def _shadow(
    value: entities.ShadowTarget | None, served: list[entities.DeploymentTarget]
) -> entities.ShadowTarget | None:
    if value is None:
        return None
    ref = str(names.parse_ref(value.ref, "spec.shadow.ref"))
    if any(t.ref == ref for t in served):
        raise errors.InvalidArgument(f"spec.shadow.ref: '{ref}' is a target; a shadow is compared with the targets")
    if not 0 <= value.sample_percent <= 100:
        raise errors.InvalidArgument(f"spec.shadow.sample_percent: a percent, 1 to 100 (got {value.sample_percent})")
    return entities.ShadowTarget(ref, value.sample_percent or 100)


def options(value: entities.ServingOptions) -> entities.ServingOptions:
    if not 0 <= value.max_batch_size <= MAX_BATCH_SIZE:
        raise errors.InvalidArgument(f"spec.options.max_batch_size: 1 to {MAX_BATCH_SIZE}, or 0 for the replica's")
    delay = value.max_queue_delay_us
    if delay is not None and not 0 <= delay <= MAX_QUEUE_DELAY_US:
        raise errors.InvalidArgument(f"spec.options.max_queue_delay_us: 0 to {MAX_QUEUE_DELAY_US:,}")
    if not 0 <= value.instances <= MAX_INSTANCES:
        raise errors.InvalidArgument(f"spec.options.instances: 1 to {MAX_INSTANCES}, or 0 for the replica's")
    if value.device and not DEVICE.fullmatch(value.device):
        raise errors.InvalidArgument(
            f"spec.options.device: 'auto', 'cpu', 'cuda' or 'cuda:N', not '{value.device[:40]}'"
        )
    if value.format is not None and value.format not in SERVABLE_FORMATS:
        raise errors.InvalidArgument(
            f"spec.options.format: the inference service serves SAFETENSORS or ONNX, not {value.format.value}"
        )
    sizes = value.preferred_batch_sizes
    if len(sizes) > MAX_PREFERRED_SIZES or not all(1 <= s <= MAX_BATCH_SIZE for s in sizes):
        raise errors.InvalidArgument(
            f"spec.options.preferred_batch_sizes: at most {MAX_PREFERRED_SIZES} sizes, each 1 to {MAX_BATCH_SIZE}"
        )
    if not 0 <= value.max_queue_size <= MAX_QUEUE_SIZE:
        raise errors.InvalidArgument(f"spec.options.max_queue_size: 1 to {MAX_QUEUE_SIZE:,}, or 0 for the replica's")
    return replace(value, preferred_batch_sizes=tuple(sorted(set(sizes))))


def report(value: entities.ReplicaStatus) -> entities.ReplicaStatus:
    if not REPLICA_ID.fullmatch(value.replica):
        raise errors.InvalidArgument(
            "status.replica: 1-128 of A-Z a-z 0-9 _ . : -, starting with a letter or digit "
            f"(got '{value.replica[:40]}')"
        )
    if value.generation < 0:
        raise errors.InvalidArgument("status.generation: must not be negative")
    if len(value.targets) > MAX_REPORTED_TARGETS:
        raise errors.InvalidArgument(f"status.targets: at most {MAX_REPORTED_TARGETS}")
    out = []
    for i, target in enumerate(value.targets):
        field = f"status.targets[{i}]"
        ref = str(names.parse_ref(target.ref, f"{field}.ref"))
        if target.version < 0:
            raise errors.InvalidArgument(f"{field}.version: must not be negative")
        names.text_value(target.reason, f"{field}.reason", MAX_REASON_CHARS)
        out.append(entities.TargetStatus(ref, target.version, target.state, target.reason, target.shadow))
    return entities.ReplicaStatus(value.replica, value.generation, tuple(out))
