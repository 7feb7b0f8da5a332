"""Configured models that the registry does not have yet are served once they appear.

The inference process starts with `late@production` and `pinned/2` configured
before either exists, and a resync interval far beyond the test, so only the
follower's events can bring them in: no restart, no RepositoryModelLoad.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from maas.common.clients.registry import BlockingRegistryClient
from tests.inference import support


@pytest.fixture
def late(workdir: Path, registry_process: support.Process) -> Iterator[support.Process]:
    proc = support.start_inference(
        registry_process.address, workdir / "late", models="late@production,pinned/2", resync_seconds=3600
    )
    yield proc
    assert proc.stop() == 0, proc.log()[-2000:]


def eventually(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def infer(client: tc.InferenceServerClient, model: str, x: np.ndarray) -> tc.InferResult:
    tensor = tc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor])


def test_configured_models_missing_at_start_are_served_when_they_appear(
    late: support.Process, registry: BlockingRegistryClient
) -> None:
    client = tc.InferenceServerClient(late.address)
    x = np.random.default_rng(7).standard_normal((1, 64)).astype(np.float32)
    try:
        assert client.is_server_ready()
        for model in ("late", "pinned"):
            assert not client.is_model_ready(model)
            with pytest.raises(InferenceServerException) as info:
                infer(client, model, x)
            # Kept and awaited (retry later), not forgotten (NOT_FOUND).
            assert str(info.value.status()) == "StatusCode.UNAVAILABLE", info.value

        # A version without the alias is not yet what `late@production` names.
        _, module = support.register_torch(registry, "late", support.MLP_ARCH, seed=11, alias=None)
        support.register_torch(registry, "pinned", support.MLP_ARCH, seed=12, alias=None)
        assert not client.is_model_ready("late") and not client.is_model_ready("pinned")

        registry.set_alias("late", "production", 1)
        eventually(lambda: client.is_model_ready("late"), "late@production served")
        result = infer(client, "late", x)
        assert result.get_response().model_version == "1"
        min_rows = support.min_execution_rows(late.address, "late")
        assert np.array_equal(result.as_numpy("logits"), support.expected(module, x, min_rows))

        # pinned/2 appears with its upload (VERSION_READY), without any alias.
        assert not client.is_model_ready("pinned")
        version, pinned = support.register_torch(registry, "pinned", support.MLP_ARCH, seed=13, alias=None)
        assert version == 2
        eventually(lambda: client.is_model_ready("pinned", "2"), "pinned/2 served")
        result = infer(client, "pinned", x)
        assert result.get_response().model_version == "2"
        assert np.array_equal(
            result.as_numpy("logits"), support.expected(pinned, x, support.min_execution_rows(late.address, "pinned"))
        )

        # What a client asks to load is not kept when the registry does not have it.
        with pytest.raises(InferenceServerException) as info:
            client.load_model("ghost")
        assert str(info.value.status()) == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as info:
            infer(client, "ghost", x)
        assert str(info.value.status()) == "StatusCode.NOT_FOUND"
    finally:
        client.close()
