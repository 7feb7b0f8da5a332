"""Request validation, in-process: every bad request is INVALID_ARGUMENT naming the input.

Requests are the domain's InferRequest, as converters builds them from the
protocol's message: validation never sees protobuf.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from maas.common.errors import InvalidArgument
from maas.inference.domain import InferRequest, InputTensor
from maas.inference.tensors import Signature, TensorSpec
from maas.inference.validation import Limits, parse

SIG = Signature(
    (TensorSpec("image", "FP32", (-1, 2, 3)), TensorSpec("mask", "INT32", (-1, 2))),
    (TensorSpec("logits", "FP32", (-1, 4)), TensorSpec("probs", "FP32", (-1, 4))),
)
LIMITS = Limits(max_batch_size=8, max_elements=10_000)


def new(inputs: list[InputTensor], raw: list[bytes] | None = None, outputs: list[str] | None = None) -> InferRequest:
    return InferRequest("m", "", "", inputs, raw if raw is not None else [], outputs if outputs is not None else [])


def tensor(name: str, datatype: str, shape: Any, contents: Any = None) -> InputTensor:
    return InputTensor(name, datatype, tuple(shape), contents)


def request(rows: int = 2, *, raw: bool = True) -> InferRequest:
    image = np.arange(rows * 6, dtype=np.float32).reshape(rows, 2, 3)
    mask = np.arange(rows * 2, dtype=np.int32).reshape(rows, 2)
    arrays = (("image", "FP32", image), ("mask", "INT32", mask))
    if raw:
        return new([tensor(n, t, a.shape) for n, t, a in arrays], [a.tobytes() for _, _, a in arrays])
    return new([tensor(n, t, a.shape, a.ravel().tolist()) for n, t, a in arrays])


def inputs(req: InferRequest) -> list[InputTensor]:
    assert isinstance(req.inputs, list)
    return req.inputs


def raw(req: InferRequest) -> list[bytes]:
    assert isinstance(req.raw, list)
    return req.raw


@pytest.mark.parametrize("as_raw", [True, False])
def test_valid_request_parses_in_signature_order(as_raw: bool) -> None:
    # Inputs in reverse order: validation maps by name, not position.
    good = request(3, raw=as_raw)
    req = new(inputs(good)[::-1], raw(good)[::-1])
    parsed = parse(req, SIG, LIMITS)
    assert parsed.rows == 3
    assert parsed.arrays[0].dtype == np.float32 and parsed.arrays[0].shape == (3, 2, 3)
    np.testing.assert_array_equal(parsed.arrays[0].ravel(), np.arange(18, dtype=np.float32))
    np.testing.assert_array_equal(parsed.arrays[1].ravel(), np.arange(6, dtype=np.int32))
    assert parsed.outputs == (0, 1)


def test_requested_outputs_are_selected_by_name() -> None:
    req = request()
    req.outputs = ["probs"]
    assert parse(req, SIG, LIMITS).outputs == (1,)


def test_raw_inputs_become_arrays_over_the_request_bytes() -> None:
    req = request()
    parsed = parse(req, SIG, LIMITS)
    assert not parsed.arrays[0].flags.owndata and parsed.arrays[0].base is not None


def invalid(req: InferRequest, naming: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(req, SIG, LIMITS)
    assert naming in info.value.message


def test_missing_input() -> None:
    req = request()
    del inputs(req)[1]
    del raw(req)[1]
    invalid(req, "mask")


def test_extra_input() -> None:
    req = request()
    inputs(req).append(tensor("extra", "FP32", [1]))
    raw(req).append(b"\0" * 4)
    invalid(req, "extra")


def test_an_input_given_twice_is_named() -> None:
    req = request()
    inputs(req).append(inputs(req)[1])
    raw(req).append(raw(req)[1])
    invalid(req, "'mask'")


def test_unknown_input_instead_of_a_known_one() -> None:
    req = request()
    inputs(req)[1].name = "other"
    invalid(req, "other")


def test_wrong_datatype() -> None:
    req = request()
    inputs(req)[1].datatype = "INT64"
    invalid(req, "mask")


def test_wrong_rank_and_wrong_dims() -> None:
    req = request()
    inputs(req)[0].shape = (2, 6)
    invalid(req, "image")
    req = request()
    inputs(req)[0].shape = (2, 3, 2)
    invalid(req, "image")


def test_negative_dimension() -> None:
    req = request()
    inputs(req)[1].shape = (2, -2)
    invalid(req, "mask")


def test_raw_length_must_equal_elements_times_item_size() -> None:
    req = request()
    raw(req)[0] = raw(req)[0][:-1]
    invalid(req, "image")


def test_contents_and_raw_together() -> None:
    req = request()
    inputs(req)[0].contents = [1.0]
    invalid(req, "image")


def test_raw_for_only_some_inputs() -> None:
    req = request()
    del raw(req)[1]
    invalid(req, "raw_input_contents")


def test_typed_contents_count() -> None:
    req = request(raw=False)
    contents = inputs(req)[1].contents
    assert isinstance(contents, list)
    contents.append(7)
    invalid(req, "mask")


def test_typed_values_out_of_range_for_the_datatype() -> None:
    sig = Signature((TensorSpec("x", "INT8", (-1, 1)),), (TensorSpec("y", "FP32", (-1, 1)),))
    req = new([tensor("x", "INT8", [1, 1], [1000])])
    with pytest.raises(InvalidArgument, match="'x'"):
        parse(req, sig, LIMITS)


def test_element_cap_before_any_allocation() -> None:
    req = request()
    inputs(req)[0].shape = (2**40, 2, 3)  # a tiny payload claiming 2^40 rows
    invalid(req, "image")


def test_batch_limits_and_consistency() -> None:
    invalid(request(9), "max_batch_size")
    req = request()
    inputs(req)[1].shape = (1, 2)
    raw(req)[1] = raw(req)[1][:8]
    invalid(req, "mask")
    empty = request()
    inputs(empty)[0].shape = (0, 2, 3)
    raw(empty)[0] = b""
    invalid(empty, "image")


def test_unknown_duplicate_and_too_many_requested_outputs() -> None:
    req = request()
    req.outputs = ["nope"]
    invalid(req, "nope")
    req = request()
    req.outputs = ["logits", "logits"]
    invalid(req, "logits")
    req = request()
    req.outputs = ["logits"] * 100_000
    invalid(req, "outputs")


def test_fp16_only_raw() -> None:
    sig = Signature((TensorSpec("h", "FP16", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 1)),))
    # Typed contents for a datatype without a contents field: converters gives no values.
    req = new([tensor("h", "FP16", [1, 2], ())])
    with pytest.raises(InvalidArgument, match="'h'"):
        parse(req, sig, LIMITS)
    req = new([tensor("h", "FP16", [1, 2])], [np.array([[1.0, 2.0]], dtype=np.float16).tobytes()])
    assert parse(req, sig, LIMITS).arrays[0].tolist() == [[1.0, 2.0]]


# ------------------------------------------------- the plain raw fast path


def _variants() -> list[tuple[str, InferRequest]]:
    """Raw requests in signature order (the fast path's candidates): valid ones and broken ones."""
    out: list[tuple[str, InferRequest]] = [("plain", request(2)), ("one row", request(1))]
    out.append(("max batch", request(8)))
    out.append(("over max batch", request(9)))

    def changed(name: str, change: Any) -> None:
        r = request(2)
        change(r)
        out.append((name, r))

    changed("inconsistent batch", lambda r: setattr(r.inputs[1], "shape", (3, 2)))
    changed("wrong dims", lambda r: setattr(r.inputs[0], "shape", (2, 3, 2)))
    changed("wrong rank", lambda r: setattr(r.inputs[0], "shape", (2, 6)))
    changed("empty batch", lambda r: setattr(r.inputs[0], "shape", (0, 2, 3)))
    changed("negative batch", lambda r: setattr(r.inputs[0], "shape", (-2, 2, 3)))
    changed("wrong datatype", lambda r: setattr(r.inputs[1], "datatype", "INT64"))
    changed("wrong name", lambda r: setattr(r.inputs[0], "name", "other"))
    changed("short raw", lambda r: raw(r).__setitem__(0, raw(r)[0][:-1]))
    changed("contents and raw", lambda r: setattr(r.inputs[0], "contents", [1.0]))
    changed("raw for one input", lambda r: raw(r).pop(1))
    changed("requested output", lambda r: setattr(r, "outputs", ["probs"]))
    return out


@pytest.mark.parametrize("name,req", _variants(), ids=[n for n, _ in _variants()])
def test_the_fast_path_answers_exactly_as_the_full_checks(name: str, req: InferRequest) -> None:
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
        taken = _parse_plain_raw(req.inputs, req.raw, plan, LIMITS) is not None
        # (parse itself sends requests that name outputs to the full checks before this)
        assert taken == (name in ("plain", "one row", "max batch", "requested output")), name
    # Signatures with another variable dimension, or without a batch dimension, always take the full checks.
    assert Signature((TensorSpec("x", "FP32", (-1, -1)),), (TensorSpec("y", "FP32", (-1, 1)),)).raw_plan is None
    assert Signature((TensorSpec("x", "FP32", (2, 3)),), (TensorSpec("y", "FP32", (2, 1)),)).raw_plan is None


# ------------------------------------------------------ zero-size dimensions

DYNAMIC = Signature((TensorSpec("x", "FP32", (-1, -1)),), (TensorSpec("y", "FP32", (-1, -1)),))


@pytest.mark.parametrize("shape", [[1, 0], [0, 64], [0, 0]], ids=["inner", "batch", "both"])
def test_a_zero_size_dimension_is_refused_whatever_the_dimension(shape: list[int]) -> None:
    with pytest.raises(InvalidArgument, match="'x'"):
        parse(new([tensor("x", "FP32", shape)], [b""]), DYNAMIC, LIMITS)
    with pytest.raises(InvalidArgument, match="'x'"):
        parse(new([tensor("x", "FP32", shape, [])]), DYNAMIC, LIMITS)
