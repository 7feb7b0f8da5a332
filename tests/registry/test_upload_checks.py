"""No version that no runtime can serve becomes READY: content checks at upload, on both databases.

Safetensors weights are checked against the catalog's parameter table (the
registry never imports torch); ONNX graphs against what the pinned
onnxruntime loads. Refused content leaves the version FAILED with the reason
and nothing in the artifact store.
"""

from __future__ import annotations

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save as save_safetensors

from maas.registry.storage import onnx_checks
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, safetensors_bytes, version_request
from tests.registry.test_artifacts import assert_refused, blobs, upload

RESNET18 = {"name": "resnet18", "args": {"num_classes": 10}, "input_shape": [1, 32, 32]}


def mlp_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"layers.1.weight": (8, 4), "layers.1.bias": (8,), "layers.3.weight": (3, 8), "layers.3.bias": (3,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


async def new_version(stub, request: pb.CreateVersionRequest) -> int:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    return (await stub.CreateVersion(request)).version


async def refused(stub, artifact_root, request: pb.CreateVersionRequest, data: bytes) -> str:
    """Upload `data` to a new version: INVALID_ARGUMENT, and the version FAILED with the same reason."""
    number = await new_version(stub, request)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await upload(stub, "m", number, data)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    reason = await assert_refused(stub, artifact_root, "m", number)
    assert reason == info.value.details()
    return reason


# ------------------------------------------------------------------ safetensors


async def test_plain_torchvision_state_dict_becomes_ready(stub, artifact_root) -> None:
    torchvision = pytest.importorskip("torchvision")
    from safetensors.torch import save

    data = save(torchvision.models.resnet18(num_classes=10).state_dict())
    number = await new_version(stub, version_request("m", architecture=RESNET18))
    assert (await upload(stub, "m", number, data)).status == pb.VERSION_STATUS_READY


async def test_legacy_prefixed_weights_are_still_accepted(stub, artifact_root) -> None:
    legacy = {f"net.{k}": v for k, v in mlp_tensors().items()}
    legacy |= {"mean": np.zeros(1, np.float32), "std": np.ones(1, np.float32)}
    number = await new_version(stub, version_request("m"))
    assert (await upload(stub, "m", number, save_safetensors(legacy))).status == pb.VERSION_STATUS_READY


def _wrong_shape() -> dict[str, np.ndarray]:
    tensors = mlp_tensors()
    tensors["layers.1.weight"] = np.zeros((8, 5), np.float32)
    return tensors


def _missing() -> dict[str, np.ndarray]:
    tensors = mlp_tensors()
    del tensors["layers.3.bias"]
    return tensors


def _extra() -> dict[str, np.ndarray]:
    return {**mlp_tensors(), "layers.5.weight": np.zeros((2, 2), np.float32)}


def _wrong_dtype() -> dict[str, np.ndarray]:
    tensors = mlp_tensors()
    tensors["layers.3.weight"] = tensors["layers.3.weight"].astype(np.float64)
    return tensors


@pytest.mark.parametrize(
    ("make", "named", "words"),
    [
        (_wrong_shape, "layers.1.weight", ["[8, 5]", "[8, 4]"]),
        (_missing, "layers.3.bias", ["needs"]),
        (_extra, "layers.5.weight", ["not a tensor"]),
        (_wrong_dtype, "layers.3.weight", ["F64", "F32"]),
    ],
    ids=["wrong-shape", "missing", "extra", "wrong-dtype"],
)
async def test_weights_that_do_not_fit_fail_the_version_naming_the_tensor(
    stub, artifact_root, make, named: str, words: list[str]
) -> None:
    reason = await refused(stub, artifact_root, version_request("m"), save_safetensors(make()))
    assert named in reason and all(w in reason for w in words), reason
    # The version is FAILED for good: the right bytes cannot be sent to it any more.
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await upload(stub, "m", 1, safetensors_bytes(0))


async def test_torchvision_weights_for_other_arguments_name_the_first_mismatch(stub, artifact_root) -> None:
    torchvision = pytest.importorskip("torchvision")
    from safetensors.torch import save

    data = save(torchvision.models.resnet18(num_classes=7).state_dict())
    reason = await refused(stub, artifact_root, version_request("m", architecture=RESNET18), data)
    assert "fc.weight" in reason and "[7, 512]" in reason and "[10, 512]" in reason, reason


@pytest.mark.parametrize(
    "architecture",
    [
        {"name": "resnet9000", "input_shape": [3, 32, 32]},
        {"name": "mlp", "args": {"in_features": 4, "depth": 3}, "input_shape": [4]},
        {"name": "mlp", "args": {"in_features": 5}, "input_shape": [4]},
        {"name": "lenet", "input_shape": [1, 4, 4]},
        {"name": "mlp", "args": {"in_features": 4}},
    ],
    ids=["unknown-name", "unknown-arg", "arg-against-shape", "input-too-small", "no-input-shape"],
)
async def test_an_architecture_no_runtime_builds_is_refused_at_create(stub, architecture) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateVersion(version_request("m", architecture=architecture))
    assert not (await stub.ListVersions(pb.ListVersionsRequest(model="m"))).versions


# ------------------------------------------------------------------------- onnx


def onnx_model(opset: int = 17, ir_version: int = 8, external: bool = False) -> onnx.ModelProto:
    """y = x @ W + b on a dynamic batch: one input, one output, W and b initializers."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    if external:
        w = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 3])
        w.data_location = TensorProto.EXTERNAL
        w.external_data.add(key="location", value="../../etc/passwd")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def onnx_request() -> pb.CreateVersionRequest:
    """An ONNX version that declares no signature: the registry extracts it."""
    return pb.CreateVersionRequest(model="m", format=pb.MODEL_FORMAT_ONNX)


async def test_a_good_onnx_gets_its_signature_extracted(stub, artifact_root) -> None:
    number = await new_version(stub, onnx_request())
    ready = await upload(stub, "m", number, onnx_model().SerializeToString())
    assert ready.status == pb.VERSION_STATUS_READY
    got = await stub.GetVersion(pb.GetVersionRequest(model="m", version=number))
    (x,) = got.signature.inputs  # the initializers W and b are not inputs
    (y,) = got.signature.outputs
    assert (x.name, list(x.shape), y.name, list(y.shape)) == ("x", [-1, 4], "y", [-1, 3])
    assert x.datatype == y.datatype == common_pb2.DATA_TYPE_FP32
    assert len(blobs(artifact_root)) == 1


async def test_an_onnx_contradicting_its_declared_signature_fails(stub, artifact_root) -> None:
    # version_request declares input "input" [-1, 4] and output "logits": this graph has x and y.
    reason = await refused(
        stub, artifact_root, version_request("m", fmt=pb.MODEL_FORMAT_ONNX), onnx_model().SerializeToString()
    )
    assert "input" in reason and "x" in reason, reason


def _truncated() -> bytes:
    data = onnx_model().SerializeToString()
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x13\x37 this is not a model at all \x00\xff" * 8, ["onnx"]),
        (_truncated(), ["onnx"]),
        (onnx_model(opset=onnx_checks.MAX_OPSET[""] + 1).SerializeToString(), ["opset", "newer"]),
        (onnx_model(ir_version=onnx_checks.MAX_IR_VERSION + 1).SerializeToString(), ["IR version"]),
        (onnx_model(external=True).SerializeToString(), ["W", "external data"]),
    ],
    ids=["garbage", "truncated", "opset-too-new", "ir-too-new", "external-data"],
)
async def test_onnx_no_runtime_serves_fails_the_version(stub, artifact_root, data: bytes, words: list[str]) -> None:
    reason = await refused(stub, artifact_root, onnx_request(), data)
    assert all(w.lower() in reason.lower() for w in words), reason


def test_the_onnx_limits_are_those_of_the_installed_onnxruntime() -> None:
    """The constants in onnx_checks follow the pinned onnxruntime: at the limit it loads, past it it refuses."""
    ort = pytest.importorskip("onnxruntime")

    def loads(model: onnx.ModelProto) -> bool:
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # onnxruntime's load errors have several types
            return False
        return True

    assert loads(onnx_model(opset=onnx_checks.MAX_OPSET[""]))
    assert not loads(onnx_model(opset=onnx_checks.MAX_OPSET[""] + 1))
    assert loads(onnx_model(ir_version=onnx_checks.MAX_IR_VERSION))
    assert not loads(onnx_model(ir_version=onnx_checks.MAX_IR_VERSION + 1))
    ml = onnx_model()
    ml.opset_import.add(domain="ai.onnx.ml", version=onnx_checks.MAX_OPSET["ai.onnx.ml"])
    assert loads(ml)
    ml.opset_import[-1].version += 1
    assert not loads(ml)
