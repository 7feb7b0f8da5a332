"""Request validation, in-process: every bad request is INVALID_ARGUMENT naming the input.

Requests are built with tritonclient's generated messages (the published
protocol); validation reads them by field name, exactly as it reads ours.
"""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from maas.common.errors import InvalidArgument
from maas.inference.tensors import Signature, TensorSpec
from maas.inference.validation import Limits, parse

SIG = Signature(
    (TensorSpec("image", "FP32", (-1, 2, 3)), TensorSpec("mask", "INT32", (-1, 2))),
    (TensorSpec("logits", "FP32", (-1, 4)), TensorSpec("probs", "FP32", (-1, 4))),
)
LIMITS = Limits(max_batch_size=8, max_elements=10_000)


def request(rows: int = 2, *, raw: bool = True) -> pb.ModelInferRequest:
    image = np.arange(rows * 6, dtype=np.float32).reshape(rows, 2, 3)
    mask = np.arange(rows * 2, dtype=np.int32).reshape(rows, 2)
    req = pb.ModelInferRequest(model_name="m")
    for name, datatype, array in (("image", "FP32", image), ("mask", "INT32", mask)):
        tensor = req.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            req.raw_input_contents.append(array.tobytes())
        elif datatype == "FP32":
            tensor.contents.fp32_contents.extend(array.ravel().tolist())
        else:
            tensor.contents.int_contents.extend(array.ravel().tolist())
    return req


@pytest.mark.parametrize("raw", [True, False])
def test_valid_request_parses_in_signature_order(raw: bool) -> None:
    # Inputs in reverse order: validation maps by name, not position.
    good = request(3, raw=raw)
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.extend([good.inputs[1], good.inputs[0]])
    if raw:
        req.raw_input_contents.extend([good.raw_input_contents[1], good.raw_input_contents[0]])
    parsed = parse(req, SIG, LIMITS)
    assert parsed.rows == 3
    assert parsed.arrays[0].dtype == np.float32 and parsed.arrays[0].shape == (3, 2, 3)
    np.testing.assert_array_equal(parsed.arrays[0].ravel(), np.arange(18, dtype=np.float32))
    np.testing.assert_array_equal(parsed.arrays[1].ravel(), np.arange(6, dtype=np.int32))
    assert parsed.outputs == (0, 1)


def test_requested_outputs_are_selected_by_name() -> None:
    req = request()
    req.outputs.add(name="probs")
    assert parse(req, SIG, LIMITS).outputs == (1,)


def invalid(req: pb.ModelInferRequest, naming: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(req, SIG, LIMITS)
    assert naming in info.value.message


def test_missing_input() -> None:
    req = request()
    del req.inputs[1]
    del req.raw_input_contents[1]
    invalid(req, "mask")


def test_extra_input() -> None:
    req = request()
    req.inputs.add(name="extra", datatype="FP32", shape=[1])
    req.raw_input_contents.append(b"\0" * 4)
    invalid(req, "extra")


def test_an_input_given_twice_is_named() -> None:
    req = request()
    req.inputs.add().CopyFrom(req.inputs[1])
    req.raw_input_contents.append(req.raw_input_contents[1])
    invalid(req, "'mask'")


def test_unknown_input_instead_of_a_known_one() -> None:
    req = request()
    req.inputs[1].name = "other"
    invalid(req, "other")


def test_wrong_datatype() -> None:
    req = request()
    req.inputs[1].datatype = "INT64"
    invalid(req, "mask")


def test_wrong_rank_and_wrong_dims() -> None:
    req = request()
    del req.inputs[0].shape[:]
    req.inputs[0].shape.extend([2, 6])
    invalid(req, "image")
    req = request()
    req.inputs[0].shape[1] = 3
    req.inputs[0].shape[2] = 2
    invalid(req, "image")


def test_negative_dimension() -> None:
    req = request()
    req.inputs[1].shape[1] = -2
    invalid(req, "mask")


def test_raw_length_must_equal_elements_times_item_size() -> None:
    req = request()
    req.raw_input_contents[0] = req.raw_input_contents[0][:-1]
    invalid(req, "image")


def test_contents_and_raw_together() -> None:
    req = request()
    req.inputs[0].contents.fp32_contents.append(1.0)
    invalid(req, "image")


def test_raw_for_only_some_inputs() -> None:
    req = request()
    del req.raw_input_contents[1]
    invalid(req, "raw_input_contents")


def test_typed_contents_count() -> None:
    req = request(raw=False)
    req.inputs[1].contents.int_contents.append(7)
    invalid(req, "mask")


def test_typed_values_out_of_range_for_the_datatype() -> None:
    sig = Signature((TensorSpec("x", "INT8", (-1, 1)),), (TensorSpec("y", "FP32", (-1, 1)),))
    req = pb.ModelInferRequest()
    req.inputs.add(name="x", datatype="INT8", shape=[1, 1]).contents.int_contents.append(1000)
    with pytest.raises(InvalidArgument, match="'x'"):
        parse(req, sig, LIMITS)


def test_element_cap_before_any_allocation() -> None:
    req = request()
    req.inputs[0].shape[0] = 2**40  # a tiny payload claiming 2^40 rows
    invalid(req, "image")


def test_batch_limits_and_consistency() -> None:
    invalid(request(9), "max_batch_size")
    req = request()
    req.inputs[1].shape[0] = 1
    req.raw_input_contents[1] = req.raw_input_contents[1][:8]
    invalid(req, "mask")
    empty = request()
    empty.inputs[0].shape[0] = 0
    empty.raw_input_contents[0] = b""
    invalid(empty, "image")


def test_unknown_duplicate_and_too_many_requested_outputs() -> None:
    req = request()
    req.outputs.add(name="nope")
    invalid(req, "nope")
    req = request()
    req.outputs.add(name="logits")
    req.outputs.add(name="logits")
    invalid(req, "logits")
    req = request()
    for _ in range(100_000):
        req.outputs.add(name="logits")
    invalid(req, "outputs")


def test_fp16_only_raw() -> None:
    sig = Signature((TensorSpec("h", "FP16", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 1)),))
    req = pb.ModelInferRequest()
    req.inputs.add(name="h", datatype="FP16", shape=[1, 2]).contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(InvalidArgument, match="'h'"):
        parse(req, sig, LIMITS)
    req = pb.ModelInferRequest()
    req.inputs.add(name="h", datatype="FP16", shape=[1, 2])
    req.raw_input_contents.append(np.array([[1.0, 2.0]], dtype=np.float16).tobytes())
    assert parse(req, sig, LIMITS).arrays[0].tolist() == [[1.0, 2.0]]


# ------------------------------------------------- the plain raw fast path


def _variants() -> list[tuple[str, pb.ModelInferRequest]]:
    """Raw requests in signature order (the fast path's candidates): valid ones and broken ones."""
    out: list[tuple[str, pb.ModelInferRequest]] = [("plain", request(2)), ("one row", request(1))]
    r = request(8)
    out.append(("max batch", r))
    r = request(9)
    out.append(("over max batch", r))
    r = request(2)
    r.inputs[1].shape[:] = [3, 2]
    out.append(("inconsistent batch", r))
    r = request(2)
    r.inputs[0].shape[:] = [2, 3, 2]
    out.append(("wrong dims", r))
    r = request(2)
    r.inputs[0].shape[:] = [2, 6]
    out.append(("wrong rank", r))
    r = request(2)
    r.inputs[0].shape[:] = [0, 2, 3]
    out.append(("empty batch", r))
    r = request(2)
    r.inputs[0].shape[:] = [-2, 2, 3]
    out.append(("negative batch", r))
    r = request(2)
    r.inputs[1].datatype = "INT64"
    out.append(("wrong datatype", r))
    r = request(2)
    r.inputs[0].name = "other"
    out.append(("wrong name", r))
    r = request(2)
    r.raw_input_contents[0] = r.raw_input_contents[0][:-1]
    out.append(("short raw", r))
    r = request(2)
    r.inputs[0].contents.fp32_contents.append(1.0)
    out.append(("contents and raw", r))
    r = request(2)
    del r.raw_input_contents[1]
    out.append(("raw for one input", r))
    r = request(2)
    r.outputs.add(name="probs")
    out.append(("requested output", r))
    return out


@pytest.mark.parametrize("name,req", _variants(), ids=[n for n, _ in _variants()])
def test_the_fast_path_answers_exactly_as_the_full_checks(name: str, req: pb.ModelInferRequest) -> None:
    from maas.inference.validation import _parse

    def outcome(fn: object) -> object:
        try:
            parsed = fn(req, SIG, LIMITS)  # type: ignore[operator]
        except InvalidArgument as exc:
            return ("error", exc.message)
        return ("ok", parsed.rows, parsed.outputs, [(a.dtype, a.shape, a.tobytes()) for a in parsed.arrays])

    assert outcome(parse) == outcome(_parse)


def test_the_fast_path_takes_the_plain_request_and_nothing_unusual() -> None:
    from maas.inference.validation import _parse_plain_raw

    plan = SIG.raw_plan
    assert plan is not None
    for name, req in _variants():
        taken = _parse_plain_raw(req.inputs, req.raw_input_contents, plan, LIMITS) is not None
        # (parse itself sends requests that name outputs to the full checks before this)
        assert taken == (name in ("plain", "one row", "max batch", "requested output")), name
    # Signatures with another variable dimension, or without a batch dimension, always take the full checks.
    assert Signature((TensorSpec("x", "FP32", (-1, -1)),), (TensorSpec("y", "FP32", (-1, 1)),)).raw_plan is None
    assert Signature((TensorSpec("x", "FP32", (2, 3)),), (TensorSpec("y", "FP32", (2, 1)),)).raw_plan is None


# ------------------------------------------------------ zero-size dimensions

DYNAMIC = Signature((TensorSpec("x", "FP32", (-1, -1)),), (TensorSpec("y", "FP32", (-1, -1)),))


@pytest.mark.parametrize("shape", [[1, 0], [0, 64], [0, 0]], ids=["inner", "batch", "both"])
def test_a_zero_size_dimension_is_refused_whatever_the_dimension(shape: list[int]) -> None:
    req = pb.ModelInferRequest()
    req.inputs.add(name="x", datatype="FP32", shape=shape)
    req.raw_input_contents.append(b"")
    with pytest.raises(InvalidArgument, match="'x'"):
        parse(req, DYNAMIC, LIMITS)
    typed = pb.ModelInferRequest()
    typed.inputs.add(name="x", datatype="FP32", shape=shape).contents.SetInParent()
    with pytest.raises(InvalidArgument, match="'x'"):
        parse(typed, DYNAMIC, LIMITS)
