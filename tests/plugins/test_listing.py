"""ListCatalog's content: each entry's arguments from its pydantic model, its inputs, its origin."""

from __future__ import annotations

import json

import pytest

from maas.common.errors import InvalidArgument, NotFound
from maas.trainer import converters
from maas.trainer.catalog_listing import listing


def entry(kind: str, name: str):  # -> pb.CatalogEntry
    (found,) = listing(kind, name)
    return converters.to_catalog_entry(found)


def test_a_built_in_architecture_is_listed_with_its_arguments_and_inputs() -> None:
    mlp = entry("architecture", "mlp")
    assert (mlp.kind, mlp.available, mlp.origin.builtin, mlp.origin.distribution) == (
        "architecture",
        True,
        True,
        "maas-common",
    )
    assert mlp.origin.target == "maas.common.builtin_architectures:MLP"
    args = {a.name: a for a in mlp.arguments}
    assert json.loads(args["hidden"].default_json) == [128]
    assert (args["hidden"].type, args["hidden"].minimum, args["hidden"].maximum) == ("list of integer", 1, 65536)
    assert (args["dropout"].minimum, args["dropout"].maximum, args["dropout"].exclusive_maximum) == (0, 0.9, False)
    assert args["num_classes"].description.startswith("Output classes")
    assert [(i.name, i.datatype, i.any_shape) for i in mlp.inputs] == [("input", "FP32", True)]
    lenet = entry("architecture", "lenet")
    assert list(lenet.inputs[0].shape) == [-1, -1, -1]


def test_a_data_set_says_whether_it_takes_a_path() -> None:
    assert entry("dataset", "imagefolder").path == "required"
    fake = entry("dataset", "fake")
    assert fake.path == "none" and {a.name for a in fake.arguments} == {
        "num_samples",
        "num_classes",
        "channels",
        "image_size",
    }


def test_every_kind_is_listed_architectures_first_and_bad_requests_are_refused() -> None:
    kinds = [e.kind for e in listing("", "")]
    assert kinds == sorted(kinds) and {"architecture", "dataset"} == set(kinds)
    with pytest.raises(NotFound):
        listing("", "no_such_entry")
    with pytest.raises(InvalidArgument):
        listing("model", "")
    with pytest.raises(InvalidArgument):
        listing("", "x" * 65)
