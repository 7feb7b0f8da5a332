"""Text encoders: arguments and parameter table (torch-free), built modules, pretrained weights as data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from maas.common import text_architectures as ta
from maas.common import text_models as tm
from maas.common.errors import FailedPrecondition, InvalidArgument

SIZES: list[dict[str, Any]] = [
    {},
    {"num_layers": 1, "hidden_size": 24, "num_heads": 3, "intermediate_size": 40, "vocab_size": 120},
    {
        "num_layers": 3,
        "hidden_size": 32,
        "num_heads": 4,
        "intermediate_size": 64,
        "vocab_size": 300,
        "max_positions": 40,
    },
    {"num_layers": 2, "hidden_size": 16, "num_heads": 1, "intermediate_size": 16, "vocab_size": 64, "pad_token_id": 7},
]
TINY = {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 48, "vocab_size": 200}


def _tiny(family: str, num_classes: int = 3, **extra: Any) -> tuple[ta.EncoderArgs, tm.TextClassifier]:
    args = ta.parse_args(family, {"num_classes": num_classes, **TINY, **extra})
    return args, tm.build(family, args, seed=3)


# ------------------------------------------------------------ the parameter table


@pytest.mark.parametrize("family", ta.FAMILIES)
@pytest.mark.parametrize("size", SIZES)
def test_parameter_table_is_the_real_modules_state_dict(family: str, size: dict[str, Any]) -> None:
    args = ta.parse_args(family, {"num_classes": 5, **size})
    expected = ta.expected_tensors(family, args)
    real = tm.state_dict(tm.build(family, args))
    assert list(expected) == list(real)  # same names, same order
    for name, tensor in real.items():
        assert expected[name].shape == tuple(tensor.shape), name
        assert expected[name].dtype == "F32" and tensor.dtype == torch.float32
    assert ta.parameter_count(family, args) == sum(t.numel() for t in real.values())


def test_roberta_positions_start_after_the_pad_id() -> None:
    args = ta.parse_args("roberta", {"num_classes": 2, "max_positions": 64, "pad_token_id": 1})
    assert ta.expected_tensors("roberta", args)["roberta.embeddings.position_embeddings.weight"].shape[0] == 66


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"num_classes": 2, "hidden_size": 100, "num_heads": 3}, "architecture.args"),  # not divisible
        ({"num_classes": 2, "hidden_size": True}, "architecture.args.hidden_size"),
        ({"num_classes": 2, "num_layers": "2"}, "architecture.args.num_layers"),
        ({"num_classes": 2, "num_layers": 2.5}, "architecture.args.num_layers"),
        ({"num_classes": 2, "num_layers": 49}, "architecture.args.num_layers"),
        ({"num_classes": 1}, "architecture.args.num_classes"),
        ({}, "architecture.args.num_classes"),
        ({"num_classes": 2, "trust_remote_code": True}, "architecture.args.trust_remote_code"),
        ({"num_classes": 2, "vocab_size": 100, "pad_token_id": 100}, "architecture.args"),
        ({"num_classes": 2, "activation": "tanh"}, "architecture.args.activation"),
        ({"num_classes": 2, "vocab_size": 262_144, "hidden_size": 8192, "num_heads": 64}, "architecture.args"),
    ],
)
def test_bad_arguments_are_invalid_argument_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ta.parse_args("bert", raw)
    assert caught.value.message.split(":")[0] == field


def test_integral_floats_from_a_struct_are_integers() -> None:
    args = ta.parse_args("distilbert", {"num_classes": 4.0, "num_layers": 3.0})
    assert args.num_layers == 3 and isinstance(args.num_layers, int)


def test_unknown_family_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"architecture\.name"):
        ta.parse_args("gpt2", {"num_classes": 2})


def test_max_length_must_fit_the_positions() -> None:
    args = ta.parse_args("bert", {"num_classes": 2, "max_positions": 64})
    ta.check_max_length(args, 64)
    with pytest.raises(InvalidArgument, match=r"text\.max_length"):
        ta.check_max_length(args, 65)


def test_signature_is_token_ids_and_mask_in_logits_out() -> None:
    sig = ta.signature(ta.parse_args("bert", {"num_classes": 7}))
    assert [(i["name"], i["datatype"], i["shape"]) for i in sig["inputs"]] == [
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
    ]
    assert sig["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 7]}]


# ------------------------------------------------------------------ the modules


@pytest.mark.parametrize("family", ta.FAMILIES)
def test_padding_does_not_change_a_prediction(family: str) -> None:
    args, model = _tiny(family)
    pad = args.pad_token_id
    short = torch.tensor([[2, 17, 33, 41, 3]])
    long = torch.randint(5, args.vocab_size, (1, 60), generator=torch.Generator().manual_seed(0))
    ids = torch.full((2, 60), pad)
    ids[0, :5], ids[1] = short[0], long[0]
    mask = (torch.arange(60) < torch.tensor([[5], [60]])).long()
    with torch.no_grad():
        alone = model(short, torch.ones_like(short))
        batched = model(ids, mask)
    assert batched.shape == (2, 3) and batched.dtype == torch.float32
    assert torch.allclose(alone[0], batched[0], atol=1e-4)


@pytest.mark.parametrize("family", ta.FAMILIES)
def test_the_same_seed_builds_the_same_weights_and_leaves_the_global_rng(family: str) -> None:
    args = ta.parse_args(family, {"num_classes": 2, **TINY})
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = tm.build(family, args, seed=1), tm.build(family, args, seed=1), tm.build(family, args, seed=2)
    assert torch.equal(torch.rand(1), before)
    sa, sb, sc = tm.state_dict(a), tm.state_dict(b), tm.state_dict(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_stored_weights_load_strictly() -> None:
    args, model = _tiny("bert")
    other = tm.build("bert", args, seed=99)
    tm.load_weights(other, tm.state_dict(model))
    assert all(torch.equal(v, tm.state_dict(other)[k]) for k, v in tm.state_dict(model).items())
    state = tm.state_dict(model)
    state.pop("classifier.bias")
    with pytest.raises(RuntimeError):
        tm.load_weights(other, state)


# ------------------------------------------------------ pretrained checkpoints


def _bert_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "vocab_size": 200,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    config.update(overrides)
    return config


def test_a_pretrained_config_becomes_the_same_arguments_with_a_new_head() -> None:
    family, args = ta.args_from_config(_bert_config(), num_classes=4)
    assert family == "bert"
    assert (args.num_layers, args.hidden_size, args.num_heads, args.intermediate_size) == (2, 32, 4, 48)
    assert (args.vocab_size, args.max_positions, args.num_classes) == (200, 64, 4)
    distil = {"model_type": "distilbert", "n_layers": 1, "dim": 32, "n_heads": 2, "hidden_dim": 40}
    family, args = ta.args_from_config({**distil, "vocab_size": 90, "max_position_embeddings": 30}, 2)
    assert family == "distilbert" and (args.num_layers, args.hidden_size, args.intermediate_size) == (1, 32, 40)
    roberta = _bert_config(model_type="roberta", max_position_embeddings=514, pad_token_id=1, type_vocab_size=1)
    family, args = ta.args_from_config(roberta, 2)
    assert family == "roberta" and args.max_positions == 512 and ta.position_rows(family, args) == 514


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (_bert_config(auto_map={"AutoModel": "modeling_evil.EvilModel"}), "pretrained.config.auto_map"),
        (_bert_config(trust_remote_code=True), "pretrained.config.trust_remote_code"),
        (_bert_config(extra={"nested": [{"auto_map": {}}]}), "pretrained.config.auto_map"),
        (_bert_config(model_type="evil"), "pretrained.config.model_type"),
        (_bert_config(position_embedding_type="relative_key"), "pretrained.config.position_embedding_type"),
        (_bert_config(is_decoder=True), "pretrained.config.is_decoder"),
        (_bert_config(num_attention_heads=5), "pretrained.config"),
        (_bert_config(num_hidden_layers=1000), "pretrained.config.num_hidden_layers"),
        (_bert_config(hidden_size="32"), "pretrained.config.hidden_size"),
        ({k: v for k, v in _bert_config().items() if k != "vocab_size"}, "pretrained.config.vocab_size"),
        (
            {
                "model_type": "distilbert",
                "n_layers": 1,
                "dim": 32,
                "n_heads": 2,
                "hidden_dim": 40,
                "vocab_size": 90,
                "max_position_embeddings": 30,
                "sinusoidal_pos_embds": True,
            },
            "pretrained.config.sinusoidal_pos_embds",
        ),
        ([1, 2], "pretrained.config"),
    ],
)
def test_a_config_asking_for_code_or_unsupported_behaviour_is_refused(config: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ta.args_from_config(config, num_classes=2)
    assert caught.value.message.split(":")[0] == field


def _checkpoint(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_a_bare_encoders_weights_load_under_the_classifier_and_the_head_stays_new(tmp_path: Path) -> None:
    family, args = ta.args_from_config(_bert_config(), num_classes=3)
    source = tm.build(family, ta.parse_args(family, {**args.model_dump(), "num_classes": 9}), seed=5)
    # As a bare BertModel saves itself: no "bert." prefix, a position_ids buffer, plus an MLM head.
    bare = {k.removeprefix("bert."): v for k, v in tm.state_dict(source).items() if k.startswith("bert.")}
    bare["embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    bare["cls.predictions.bias"] = torch.zeros(200)
    target = tm.build(family, args, seed=6)
    head_before = target.model.classifier.weight.detach().clone()
    report = tm.load_pretrained(target, tm.read_safetensors(_checkpoint(tmp_path, bare)))
    assert report.new == ("classifier.weight", "classifier.bias")
    assert report.ignored == ("cls.predictions.bias", "embeddings.position_ids")
    loaded = tm.state_dict(target)
    assert all(torch.equal(loaded[f"bert.{k}"], v) for k, v in bare.items() if f"bert.{k}" in loaded)
    assert torch.equal(target.model.classifier.weight, head_before)


def test_a_checkpoints_own_head_of_another_size_is_ignored(tmp_path: Path) -> None:
    _, target = _tiny("distilbert", num_classes=2)
    _, source = _tiny("distilbert", num_classes=11)
    report = tm.load_pretrained(target, tm.read_safetensors(_checkpoint(tmp_path, tm.state_dict(source))))
    assert set(report.new) == {"pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"}
    assert set(report.ignored) == set(report.new)


def test_missing_encoder_weights_or_other_shapes_fail(tmp_path: Path) -> None:
    _, target = _tiny("roberta")
    state = tm.state_dict(tm.build("roberta", target.args, seed=1))
    missing = {k: v for k, v in state.items() if "layer.1." not in k}
    with pytest.raises(FailedPrecondition, match="lacks"):
        tm.load_pretrained(target, missing)
    other_args = ta.parse_args("roberta", {**target.args.model_dump(), "hidden_size": 16})
    with pytest.raises(FailedPrecondition, match="shape"):
        tm.load_pretrained(target, tm.state_dict(tm.build("roberta", other_args)))


def test_a_pickle_is_never_read_as_weights(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(3)}, str(path))
    with pytest.raises(FailedPrecondition, match="not a safetensors file"):
        tm.read_safetensors(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(FailedPrecondition):
        tm.read_safetensors(path)


def test_half_precision_weights_are_read_as_float32_and_bool_refused(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path, {"a": torch.ones(2, dtype=torch.float16), "ids": torch.arange(3)})
    read = tm.read_safetensors(path)
    assert read["a"].dtype == torch.float32 and read["ids"].dtype == torch.int64
    with pytest.raises(FailedPrecondition, match="dtype"):
        tm.read_safetensors(_checkpoint(tmp_path, {"b": torch.ones(2, dtype=torch.bool)}))


def test_config_dict_round_trips_through_args_from_config() -> None:
    for family in ta.FAMILIES:
        args = ta.parse_args(family, {"num_classes": 3, **TINY})
        config = tm.hf_config(family, args).to_dict()
        again = ta.args_from_config(json.loads(json.dumps(config)), num_classes=3)
        assert again == (family, args)
