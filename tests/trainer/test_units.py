"""Trainer pieces in isolation: checkpoints, claims between replicas, data sets."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from maas.common import errors
from maas.common.sql import Database
from maas.trainer import datasets, spec
from maas.trainer.db import migrate
from maas.trainer.db.store import JobStore
from maas.trainer.jobspec import JobSpec
from maas.trainer.worker import checkpoint

DIGITS = {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 1}


def test_checkpoint_round_trip_without_pickle(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "position": {"epoch": 3, "best": None, "history": [{"val_loss": 0.5}], "pair": (1, 2)},
    }
    checkpoint.save(tmp_path, state)
    raw = (tmp_path / checkpoint.FILE).read_bytes()
    assert b"\x80\x04" not in raw[:16]  # a safetensors header, not a pickle
    loaded = checkpoint.load(tmp_path)
    assert loaded is not None
    assert loaded["position"] == state["position"]
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    restored = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(loaded["optimizer"])
    momentum = restored.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, opt.state_dict()["state"][0]["momentum_buffer"])
    assert torch.equal(loaded["rng"], state["rng"])
    assert checkpoint.load(tmp_path / "missing") is None


def test_checkpoint_refuses_objects_it_cannot_represent(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path, {"x": object()})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")


def test_replicas_never_claim_the_same_job(store_url: str) -> None:
    """Two trainer replicas (separate engines) claim concurrently: each job exactly once, FIFO."""
    setup = Database(store_url)
    migrate.upgrade(setup)
    store = JobStore(setup)
    resolved = spec.resolve(DIGITS, data_root=Path("/nonexistent"), max_world_size=1, max_runtime=60)
    submitted = [store.submit(resolved, spec.fingerprint(resolved), "")[0].job_id for _ in range(40)]
    claims: dict[str, list[str]] = {"a": [], "b": []}

    def replica(name: str) -> None:
        db = Database(store_url)
        mine = JobStore(db)
        while True:
            got = mine.claim(name, 3)
            if not got:
                break
            claims[name].extend(j.job_id for j in got)
        db.dispose()

    threads = [threading.Thread(target=replica, args=(n,)) for n in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = claims["a"] + claims["b"]
    assert sorted(everything) == sorted(submitted)
    assert len(set(everything)) == len(everything)
    for name in claims:  # each replica took its jobs oldest first
        order = [submitted.index(j) for j in claims[name]]
        assert order == sorted(order)
    # A replica restarting adopts its own RUNNING jobs; others' only once stale.
    own = store.adopt("a", stale_before_ms=0)
    assert {j.job_id for j in own} == set(claims["a"])
    setup.dispose()


def test_idempotent_submit_under_a_race(store_url: str) -> None:
    db = Database(store_url)
    migrate.upgrade(db)
    resolved = spec.resolve(DIGITS, data_root=Path("/nonexistent"), max_world_size=1, max_runtime=60)
    results: list[str] = []

    def submit() -> None:
        job, _ = JobStore(Database(store_url)).submit(resolved, spec.fingerprint(resolved), "same-key")
        results.append(job.job_id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    db.dispose()


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(path)


def test_imagefolder_loads_classes_under_the_data_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(3):
        _image(root / "pets" / "cat" / f"{i}.png", 10)
        _image(root / "pets" / "dog" / f"{i}.jpg", 200)
    (root / "pets" / "dog" / "notes.txt").write_text("not an image")
    outside = tmp_path / "secret.png"
    _image(outside, 99)
    (root / "pets" / "dog" / "link.png").symlink_to(outside)
    info = datasets.describe("imagefolder", "pets", {"image_size": 8}, root)
    assert info.labels == ("cat", "dog") and info.input_shape == (3, 8, 8)
    loaded = datasets.load(info, root, allow_download=False, seed=0)
    assert loaded.x.shape == (6, 3, 8, 8) and loaded.x.dtype == torch.uint8
    assert loaded.y.tolist() == [0, 0, 0, 1, 1, 1]  # the link out of the folder is ignored
    assert int(loaded.x[0].float().mean()) == 10 and int(loaded.x[-1].float().mean()) == 200


@pytest.mark.parametrize(
    "path", ["../x", "/etc", "a/../../b", "pets/../../x", "%2e%2e", "..\\x", "c:/x", "file:///etc", "x\x00", "a" * 2000]
)
def test_paths_cannot_leave_the_data_root(tmp_path: Path, path: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        datasets.safe_path(tmp_path, path)


def test_a_link_out_of_the_data_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(errors.InvalidArgument):
        datasets.safe_path(root, "escape")


def test_resolved_spec_defaults() -> None:
    resolved = spec.resolve(
        {"model": {"name": "lenet"}, "dataset": {"name": "digits"}},
        data_root=Path("/nonexistent"),
        max_world_size=2,
        max_runtime=100,
    )
    assert resolved.model is not None and resolved.optimizer is not None
    assert resolved.model.args == {"in_channels": 1, "padding": 2, "num_classes": 10}
    assert resolved.optimizer.model_dump() == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}
    assert resolved.epochs == 10 and resolved.batch_size == 64 and resolved.max_retries == 2
    assert resolved.max_runtime_seconds == 100
    # Stored and read back, the spec is the same object; frozen, nothing can change it on the way.
    assert JobSpec.load(json.loads(json.dumps(resolved.stored()))) == resolved
    with pytest.raises(ValidationError):
        resolved.epochs = 3  # type: ignore[misc]
    zero = spec.resolve({**DIGITS, "max_retries": 0}, data_root=Path("/x"), max_world_size=1, max_runtime=60)
    assert zero.max_retries == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "where",
    [
        lambda v: {"epochs": v},
        lambda v: {"early_stopping": {"metric": "val_loss", "patience": v}},
        lambda v: {"model": {"name": "mlp", "args": {"hidden": [8, v]}}},
        lambda v: {"model": {"name": "mlp", "args": {"extra": {"deep": [v]}}}},
        lambda v: {"dataset": {"name": "fake", "args": {"image_size": v}}},
        lambda v: {"optimizer": {"lr": v}},
    ],
)
def test_non_finite_numbers_anywhere_in_a_spec_are_invalid_argument(where, value: float) -> None:
    with pytest.raises(errors.InvalidArgument):
        spec.resolve({**DIGITS, **where(value)}, data_root=Path("/x"), max_world_size=1, max_runtime=60)


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 10_001}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"validation_split": 0.9}, "validation_split"),
        ({"seed": -3}, "seed"),
        ({"world_size": 3}, "world_size"),
        ({"max_runtime_seconds": 61}, "max_runtime_seconds"),
        ({"max_retries": 11}, "max_retries"),
        ({"threads": 1000}, "threads"),
        ({"optimizer": {"name": "lion"}}, "optimizer.name"),
        ({"optimizer": {"lr": 20.0}}, "optimizer.lr"),
        ({"optimizer": {"momentum": 2.0}}, "optimizer.momentum"),
        ({"schedule": {"name": "warmup"}}, "schedule.name"),
        ({"schedule": {"name": "step", "step_size": 0}}, "schedule.step_size"),
        ({"early_stopping": {"metric": "val_f1"}}, "early_stopping.metric"),
        ({"early_stopping": {"metric": "val_loss", "patience": 0}}, "early_stopping.patience"),
        ({"register_as": "Not A Name"}, "register_as"),
        ({"register_as": "d", "promotion": {"alias": "9bad"}}, "promotion.alias"),
        ({"register_as": "d", "promotion": {"alias": "prod", "metric": "accuracy_delta"}}, "promotion.metric"),
        ({"promotion": {"alias": "prod"}}, "promotion"),
        ({"pretrained": {"path": "w.safetensors", "sha256": "abc"}}, "pretrained.sha256"),
        (
            {"pretrained_checkpoint": {"path": "m", "sha256": {"config.json": "x"}}},
            "pretrained_checkpoint.sha256.config.json",
        ),
        ({"description": "x\x00y"}, "description"),
        ({"tags": {"bad key!": "v"}}, "tags"),
        ({"surprise": 1}, "surprise"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr"),
    ],
)
def test_a_spec_wrong_in_any_field_is_invalid_argument_naming_it(given: dict, field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        spec.resolve({**DIGITS, **given}, data_root=Path("/x"), max_world_size=2, max_runtime=60)
    assert caught.value.message.startswith(f"{field}: "), caught.value.message


def test_defaults_follow_the_optimizer_and_the_metric() -> None:
    def resolved(**given: object) -> JobSpec:
        return spec.resolve({**DIGITS, **given}, data_root=Path("/x"), max_world_size=1, max_runtime=60)

    adam = resolved(optimizer={"name": "adam"}).optimizer
    assert adam is not None and (adam.lr, adam.momentum) == (0.001, 0.0)
    early = resolved(early_stopping={"metric": "val_accuracy"}).early_stopping
    assert early is not None and early.higher_is_better and early.patience == 3
    early = resolved(early_stopping={"metric": "val_loss"}).early_stopping
    assert early is not None and not early.higher_is_better
    rule = resolved(register_as="d", promotion={"alias": "prod", "metric": "val_loss"}).promotion
    assert rule is not None and not rule.higher_is_better and rule.threshold == 0.0


def test_an_optimization_stored_by_an_earlier_release_reads_back() -> None:
    """Releases before the typed spec stored an optimization with nameless model/optimizer/schedule sections."""
    legacy = {
        "model": {"name": "", "args": {}},
        "dataset": {"name": "digits", "path": "", "args": {}},
        "optimizer": {"name": "", "lr": 0.0, "momentum": 0.0, "weight_decay": 0.0},
        "schedule": {"name": "", "step_size": 0, "gamma": 0.0},
        "epochs": 0,
        "batch_size": 0,
        "validation_split": 0.2,
        "seed": 7,
        "world_size": 1,
        "max_runtime_seconds": 60,
        "early_stopping": None,
        "register_as": "digits",
        "promotion": {"alias": "production", "metric": "accuracy_delta", "threshold": -0.01, "higher_is_better": True},
        "max_retries": 1,
        "threads": 0,
        "description": "int8 of digits/3",
        "tags": {},
        "optimize": {
            "source": "digits@production",
            "quantize": "int8",
            "method": "",
            "formats": [],
            "dataset": None,
            "register_as": "",
            "promotion": {
                "alias": "production",
                "metric": "accuracy_delta",
                "threshold": -0.01,
                "higher_is_better": True,
            },
            "calibration_batches": 8,
            "parent": {"model": "digits", "version": 3},
            "dataset_from": "lineage",
            "dataset_fingerprint": "",
        },
    }
    loaded = JobSpec.load(legacy)
    assert loaded.model is None and loaded.optimizer is None and loaded.optimize is not None
    assert loaded.optimize.parent.version == 3 and loaded.promotion is not None
    assert JobSpec.load(loaded.stored()) == loaded
