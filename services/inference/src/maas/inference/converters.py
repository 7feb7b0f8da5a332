"""Conversions between the Open Inference Protocol's messages and the domain.

Paired to_x / from_x functions, nothing else: the servicer calls these around
one data-plane call. Only this module (and the servicer) touches generated
protocol code; the domain types live in `domain`, so nothing here imports the
manager.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from maas.common import errors, names
from maas.inference.domain import (
    IndexEntry,
    InferRequest,
    InferResult,
    InputTensor,
    ModelOptions,
    ServedTarget,
    Target,
)
from maas.inference.tensors import CONTENTS_FIELD, Signature, TensorSpec
from maas.oip import grpc_service_pb2 as pb
from maas.oip import model_config_pb2 as mc
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as rpb

if TYPE_CHECKING:
    from maas.inference.served import ServedVersion
    from maas.inference.statistics import Duration, VersionStats

CONFIG_TYPE: dict[str, Any] = {
    name: mc.DataType.Value(f"TYPE_{name}")
    for name in (
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BF16",
    )
}
CONFIG_TYPE["BYTES"] = mc.TYPE_STRING


# ------------------------------------------------------------- signatures


def signature_from_registry(sig: common_pb2.Signature) -> Signature | None:
    """The registry's declared signature (None when the version declares none)."""
    if not sig.inputs:
        return None

    def spec(t: common_pb2.TensorSpec) -> TensorSpec:
        name = common_pb2.DataType.Name(t.datatype).removeprefix("DATA_TYPE_")
        return TensorSpec(t.name, name, tuple(int(d) for d in t.shape))

    return Signature(tuple(spec(t) for t in sig.inputs), tuple(spec(t) for t in sig.outputs))


# -------------------------------------------------------------- inference

_EMPTY: tuple[Any, ...] = ()


def from_infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """The request as the domain reads it; nothing checked yet (validation bounds it all).

    Cheap on the hot path: one slotted object per request and per input, and
    raw_input_contents is the message's own sequence of bytes, not a copy.
    Repeated fields are sliced before they are iterated: with protobuf's upb
    backend a slice costs a third of iterating the container.
    """
    outputs = request.outputs
    return InferRequest(
        request.model_name,
        request.model_version,
        request.id,
        [
            InputTensor(t.name, t.datatype, tuple(t.shape[:]), _contents(t) if t.HasField("contents") else None)
            for t in request.inputs[:]
        ],
        request.raw_input_contents,
        [out.name for out in outputs[:]] if outputs else _EMPTY,
    )


def _contents(tensor: pb.ModelInferRequest.InferInputTensor) -> Sequence[Any]:
    """The typed values of the tensor's datatype (none for a datatype without a contents field)."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    return getattr(tensor.contents, field) if field is not None else _EMPTY


def to_infer_response(result: InferResult) -> pb.ModelInferResponse:
    """Outputs always travel as raw_output_contents, as Triton answers and tritonclient expects."""
    response = pb.ModelInferResponse()
    _fill_infer_response(response, result)
    return response


def to_stream_response(result: InferResult) -> pb.ModelStreamInferResponse:
    message = pb.ModelStreamInferResponse()
    _fill_infer_response(message.infer_response, result)  # built in place: no copy of a finished message
    return message


def _fill_infer_response(response: pb.ModelInferResponse, result: InferResult) -> None:
    served = result.served
    response.model_name = served.model
    response.model_version = served.version_str
    response.id = result.request_id
    outputs = response.outputs
    raw = response.raw_output_contents
    for spec, array in result.outputs:
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        outputs.add(name=spec.name, datatype=spec.datatype, shape=array.shape)
        raw.append(array.tobytes())


def to_stream_error(request: InferRequest, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )


# --------------------------------------------------------------- metadata


def to_model_metadata(served: ServedVersion) -> pb.ModelMetadataResponse:
    def meta(t: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)

    return pb.ModelMetadataResponse(
        name=served.model,
        versions=[served.version_str],
        platform=served.runtime.platform,
        inputs=[meta(t) for t in served.signature.inputs],
        outputs=[meta(t) for t in served.signature.outputs],
    )


def to_model_config(served: ServedVersion) -> pb.ModelConfigResponse:
    sig = served.signature
    batched = sig.batched

    def dims(t: TensorSpec) -> tuple[int, ...]:
        return t.shape[1:] if batched else t.shape

    policy = served.policy
    config = mc.ModelConfig(
        name=served.model,
        platform=served.runtime.platform,
        backend=served.runtime.backend,
        version_policy=mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=[served.version])),
        max_batch_size=served.limits.max_batch_size,
        input=[mc.ModelInput(name=t.name, data_type=CONFIG_TYPE[t.datatype], dims=dims(t)) for t in sig.inputs],
        output=[mc.ModelOutput(name=t.name, data_type=CONFIG_TYPE[t.datatype], dims=dims(t)) for t in sig.outputs],
        instance_group=[
            mc.ModelInstanceGroup(
                name=f"{served.model}_0",
                count=policy.instances,
                kind=mc.ModelInstanceGroup.KIND_GPU
                if served.runtime.device.startswith("cuda")
                else mc.ModelInstanceGroup.KIND_CPU,
            )
        ],
        parameters={
            "stack_requests": mc.ModelParameter(string_value="true" if policy.stack else "false"),
            # Executions are padded to at least this many rows (the batch-invariance probe's finding).
            "min_execution_rows": mc.ModelParameter(string_value=str(policy.min_rows if policy.stack else 1)),
        },
    )
    if policy.max_batch_size > 1:
        config.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(
                preferred_batch_size=list(policy.preferred_batch_sizes),
                max_queue_delay_microseconds=policy.max_queue_delay_us,
                default_queue_policy=mc.ModelQueuePolicy(max_queue_size=policy.max_queue_size),
            )
        )
    return pb.ModelConfigResponse(config=config)


# ------------------------------------------------------------- statistics


def from_version_field(version: str) -> int | None:
    """ "" means every version; otherwise a version number."""
    if not version:
        return None
    if not version.isdigit() or len(version) > 18:
        raise errors.InvalidArgument(f"version: '{version[:40]}' is not a version number")
    return int(version)


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def to_statistics(stats: list[VersionStats]) -> pb.ModelStatisticsResponse:
    out = []
    for s in stats:
        out.append(
            pb.ModelStatistics(
                name=s.model,
                version=str(s.version),
                last_inference=s.last_inference_ms,
                inference_count=s.inference_count,
                execution_count=s.execution_count,
                inference_stats=pb.InferStatistics(
                    success=_duration(s.success),
                    fail=_duration(s.fail),
                    queue=_duration(s.queue),
                    compute_input=_duration(s.compute_input),
                    compute_infer=_duration(s.compute_infer),
                    compute_output=_duration(s.compute_output),
                    cache_hit=pb.StatisticDuration(),
                    cache_miss=pb.StatisticDuration(),
                ),
                batch_stats=[
                    pb.InferBatchStatistics(
                        batch_size=size,
                        compute_input=_duration(b.compute_input),
                        compute_infer=_duration(b.compute_infer),
                        compute_output=_duration(b.compute_output),
                    )
                    for size, b in sorted(s.batches.items())
                ],
            )
        )
    return pb.ModelStatisticsResponse(model_stats=out)


# ------------------------------------------------------------- repository


def to_index(entries: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(name=e.name, version=e.version, state=e.state, reason=e.reason)
            for e in entries
        ]
    )


def _param(value: pb.ModelRepositoryParameter) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def from_load_request(request: pb.RepositoryModelLoadRequest) -> tuple[Target | None, ModelOptions | None]:
    return from_load_parameters({key: _param(value) for key, value in request.parameters.items()})


def from_load_parameters(params: dict[str, Any]) -> tuple[Target | None, ModelOptions | None]:
    """Parameters (gRPC's or the HTTP body's): "alias" or "version" choose the target; "config" (JSON) sets batching."""
    unknown = sorted(set(params) - {"alias", "version", "config"})
    if unknown:
        raise errors.InvalidArgument(f"parameters: '{unknown[0][:40]}' is not understood (alias, version, config)")
    alias, version = params.get("alias"), params.get("version")
    if alias is not None and version is not None:
        raise errors.InvalidArgument("parameters: give alias or version, not both")
    target: Target | None = None
    if alias is not None:
        if not isinstance(alias, str):
            raise errors.InvalidArgument("parameters.alias: must be a string")
        target = Target(alias=names.alias_name(alias, "parameters.alias", allow_reserved=True))
    elif version is not None:
        if isinstance(version, str) and version.isdigit() and len(version) <= 18:
            version = int(version)
        if isinstance(version, bool) or not isinstance(version, int):
            raise errors.InvalidArgument("parameters.version: must be a version number")
        target = Target(version=names.version_number(version, "parameters.version"))
    options: ModelOptions | None = None
    config = params.get("config")
    if config is not None:
        options = _options_from_config(config)
    return target, options


def _options_from_config(text: Any) -> ModelOptions:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    elif isinstance(text, dict):  # an HTTP body may give the configuration as a JSON object
        text = json.dumps(text)
    if not isinstance(text, str) or len(text) > 64 * 1024:
        raise errors.InvalidArgument("parameters.config: must be a JSON model configuration (at most 64 KiB)")
    try:
        config = json_format.Parse(text, mc.ModelConfig(), ignore_unknown_fields=True)
    except (json_format.ParseError, json.JSONDecodeError) as exc:
        raise errors.InvalidArgument(f"parameters.config: not a valid model configuration ({str(exc)[:120]})") from None
    batching = config.dynamic_batching
    has_batching = config.HasField("dynamic_batching")

    def bounded(value: int, field: str, lo: int, hi: int) -> int:
        if not lo <= value <= hi:
            raise errors.InvalidArgument(f"parameters.config.{field}: must be in [{lo}, {hi}]")
        return value

    preferred = tuple(
        bounded(p, "dynamic_batching.preferred_batch_size", 1, 4096) for p in batching.preferred_batch_size
    )
    instances = config.instance_group[0].count if config.instance_group else 0
    return ModelOptions(
        max_batch_size=bounded(config.max_batch_size, "max_batch_size", 1, 4096) if config.max_batch_size else None,
        max_queue_delay_us=bounded(
            batching.max_queue_delay_microseconds, "dynamic_batching.max_queue_delay_microseconds", 0, 10_000_000
        )
        if has_batching
        else None,
        preferred_batch_sizes=preferred if has_batching else None,
        max_queue_size=bounded(
            batching.default_queue_policy.max_queue_size,
            "dynamic_batching.default_queue_policy.max_queue_size",
            1,
            1_000_000,
        )
        if batching.default_queue_policy.max_queue_size
        else None,
        instances=bounded(instances, "instance_group.count", 1, 64) if instances else None,
    )


# ------------------------------------------------------ registry deployments

_SERVED_FORMATS = {rpb.MODEL_FORMAT_ONNX: "onnx", rpb.MODEL_FORMAT_SAFETENSORS: "safetensors"}


def from_deployment(deployment: rpb.Deployment) -> tuple[tuple[ServedTarget, ...], ModelOptions]:
    """A deployment's targets (the shadow last) and serving options, as the manager serves them."""
    spec = deployment.spec
    targets = [_served_target(t.ref, t.weight, shadow=False) for t in spec.targets]
    if spec.HasField("shadow"):
        targets.append(_served_target(spec.shadow.ref, spec.shadow.sample_percent, shadow=True))
    o = spec.options
    options = ModelOptions(
        max_batch_size=o.max_batch_size or None,
        max_queue_delay_us=o.max_queue_delay_us if o.HasField("max_queue_delay_us") else None,
        preferred_batch_sizes=tuple(o.preferred_batch_sizes) or None,
        max_queue_size=o.max_queue_size or None,
        instances=o.instances or None,
        device=o.device or None,
        format=_SERVED_FORMATS.get(o.format),
    )
    return tuple(targets), options


def _served_target(ref: str, weight: int, *, shadow: bool) -> ServedTarget:
    parsed = names.parse_ref(ref)
    if parsed.version:
        return ServedTarget(parsed.model, Target(version=parsed.version), weight, shadow)
    return ServedTarget(parsed.model, Target(alias=parsed.alias), weight, shadow)


def to_deployment_spec(targets: Sequence[ServedTarget], options: ModelOptions | None) -> rpb.DeploymentSpec:
    """What RepositoryModelLoad declares: its targets, and the load's configuration as serving options."""
    o = options or ModelOptions()
    serving = rpb.ServingOptions(
        max_batch_size=o.max_batch_size or 0,
        instances=o.instances or 0,
        preferred_batch_sizes=list(o.preferred_batch_sizes or ()),
        max_queue_size=o.max_queue_size or 0,
    )
    if o.max_queue_delay_us is not None:
        serving.max_queue_delay_us = o.max_queue_delay_us
    spec = rpb.DeploymentSpec(
        targets=[rpb.DeploymentTarget(ref=t.ref, weight=t.weight) for t in targets if not t.shadow], options=serving
    )
    for t in targets:
        if t.shadow:
            spec.shadow.CopyFrom(rpb.ShadowTarget(ref=t.ref, sample_percent=t.weight))
    return spec
