"""The SDK's guarantees to plugin authors and to the services: strict arguments, bounded code, parameter tables."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from pydantic import Field, model_validator
from pydantic_core.core_schema import ValidationInfo

from maas.common import plugins
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.common.plugins import parameters


class BlockArgs(plugins.ArchitectureArgs):
    blocks: int = Field(2, ge=1, le=8, description="residual blocks")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each block")
    hidden: list[int] = Field(default_factory=lambda: [32], description="widths")
    kind: str = Field("relu", pattern="^(relu|gelu)$")

    @model_validator(mode="after")
    def _fits(self, info: ValidationInfo) -> BlockArgs:
        shape = (info.context or {}).get("input_shape", ())
        if shape and self.blocks > shape[-1]:
            raise ValueError(f"blocks: at most {shape[-1]} for this input")
        return self


def check(raw: dict[str, Any], shape: tuple[int, ...] = (16,)) -> BlockArgs:
    return plugins.validate(BlockArgs, raw, "model.args", "blocky", {"input_shape": shape})


def test_arguments_are_json_values_checked_strictly() -> None:
    assert check({"blocks": 3.0, "hidden": [8.0, 4]}).blocks == 3  # Struct numbers are doubles
    assert check({}).num_classes == 10 and check({}).hidden == [32]
    for raw, where in [
        ({"blocks": True}, "model.args.blocks"),
        ({"blocks": "3"}, "model.args.blocks"),
        ({"blocks": 2.5}, "model.args.blocks"),
        ({"blocks": 9}, "model.args.blocks"),
        ({"dropout": 1.0}, "model.args.dropout"),
        ({"hidden": [8, "x"]}, "model.args.hidden[1]"),
        ({"kind": "eval"}, "model.args.kind"),
        ({"num_classes": 0}, "model.args.num_classes"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            check(raw)
        assert info.value.message.startswith(f"{where}: "), (raw, info.value.message)
    with pytest.raises(InvalidArgument, match="numbers must be finite"):
        check({"dropout": math.nan})
    with pytest.raises(InvalidArgument, match="at most 4 for this input"):
        check({"blocks": 5}, shape=(4,))


def test_unknown_arguments_are_named_briefly_however_many_there_are() -> None:
    with pytest.raises(InvalidArgument) as info:
        check({f"junk_{i:06d}": i for i in range(100_000)})
    assert "'junk_000000'" in info.value.message and "not accepted by 'blocky'" in info.value.message
    assert len(info.value.message) < 300


def test_the_catalog_describes_each_argument_from_the_pydantic_schema() -> None:
    described = {a.name: a for a in plugins.describe(BlockArgs)}
    blocks = described["blocks"]
    assert (blocks.type, blocks.default, blocks.bounds(), blocks.description) == (
        "integer",
        2,
        "[1, 8]",
        "residual blocks",
    )
    assert described["dropout"].bounds() == "[0, 1)"
    assert described["hidden"].type == "list of integer" and described["hidden"].required is False
    assert described["num_classes"].bounds() == "[1, 100000]"
    assert described["kind"].type == "string"


def test_plugin_code_runs_bounded_and_its_failures_become_clear_reasons() -> None:
    assert plugins.within(5, "adding", lambda: 1 + 1) == 2
    with pytest.raises(FailedPrecondition, match=r"building x failed: KeyError: 'weights'"):
        plugins.within(5, "building x", lambda: {}["weights"])
    with pytest.raises(FailedPrecondition, match="building x failed: SystemExit"):
        plugins.within(5, "building x", lambda: exit(3))
    started = time.monotonic()
    with pytest.raises(FailedPrecondition, match=r"loading y did not finish within 0.3 s"):
        plugins.within(0.3, "loading y", lambda: time.sleep(20))
    assert time.monotonic() - started < 5

    def field_error() -> None:
        raise InvalidArgument("model.args.width: too wide")

    with pytest.raises(InvalidArgument, match=r"model\.args\.width: too wide"):  # the plugin's own message stands
        plugins.within(5, "building x", field_error)


class Conv(plugins.ArchitecturePlugin[BlockArgs]):
    name = "conv"
    Args = BlockArgs

    def build(self, args: BlockArgs, num_classes: int, input_shape: tuple[int, ...]) -> Any:
        from torch import nn

        return nn.Sequential(
            nn.Conv1d(input_shape[0], 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.LazyLinear(num_classes)
        )


def test_a_parameter_table_is_derived_on_the_meta_device() -> None:
    pytest.importorskip("torch")
    table = parameters.derive(Conv(), check({}), 5, (2, 16), 30)
    assert table["0.weight"] == plugins.TensorNeed((4, 2, 3), "F32")
    assert table["1.num_batches_tracked"] == plugins.TensorNeed((), "I64")
    assert list(table) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                           "1.num_batches_tracked", "3.weight", "3.bias"]  # fmt: skip


def test_without_torch_a_network_with_no_declared_table_cannot_be_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a registry image (no torch) says for a plugin that gives no parameters() table.
    real = parameters.importlib.util.find_spec
    monkeypatch.setattr(parameters.importlib.util, "find_spec", lambda name: None if name == "torch" else real(name))
    with pytest.raises(
        FailedPrecondition, match=r"architecture conv: its plugin declares no parameter table and torch"
    ):
        parameters.derive(Conv(), check({}), 5, (2, 16), 30)
