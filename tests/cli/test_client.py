"""The Python client library, driven from its own process (it imports maas.oip, which
cannot share a process with the tritonclient-driven tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.cli.conftest import Suite

pytestmark = pytest.mark.slow

SCRIPT = r"""
import asyncio, json, sys
import numpy as np
from maas.client import AsyncInference, Endpoints, Inference, Registry, Trainer, errors

x = np.load(sys.argv[1])
job_id = sys.argv[2]
out = {}
with Registry() as registry, Trainer() as trainer, Inference() as inference:
    out["job_state"] = trainer.get(job_id).state
    out["resolved"] = registry.resolve("digits@production").version
    out["models"] = [m.name for m in registry.models()]
    out["versions"] = [v.version for v in registry.versions("digits", limit=5)]
    out["predict"] = inference.predict("digits", x.astype(np.float64))["logits"].tolist()   # cast to FP32
    result = inference.infer("digits", {"input": x})
    out["infer_version"] = result.version
    out["infer"] = result.outputs["logits"].tolist()
    out["live"] = inference.server_live() and inference.model_ready("digits")
    meta = inference.model_metadata("digits")
    out["input"] = [meta.inputs[0].name, meta.inputs[0].datatype, list(meta.inputs[0].shape)]
    try:
        registry.get_model("no-such-model")
    except errors.NotFound:
        out["not_found"] = "NotFound"
    try:
        inference.predict("digits", np.zeros((1, 3, 8, 8), np.float32))
    except errors.InvalidArgument:
        out["bad_shape"] = "InvalidArgument"
    events = list(trainer.follow(job_id))
    out["follow_seqs"] = [e.seq for e in events]

async def main():
    async with AsyncInference(Endpoints.from_env().channel("inference")) as client:
        outputs = await client.predict("digits", x)
        return outputs["logits"].tolist()

out["async"] = asyncio.run(main())
print(json.dumps(out))
"""


def test_python_client(suite: Suite, trained: dict[str, Any], tmp_path: Path) -> None:
    assert suite.maas("serving", "load", "digits").rc == 0
    x = load_digits().data[100:110].reshape(-1, 1, 8, 8).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "script.py").write_text(SCRIPT)
    job_id = trained["result"]["job"]["job_id"]
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "script.py"), str(tmp_path / "x.npy"), job_id],
        env={**os.environ, **suite.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    version = trained["result"]["version"]["version"]
    assert out["job_state"] == 3  # JOB_STATE_SUCCEEDED
    assert out["resolved"] == version
    assert "digits" in out["models"]
    assert out["versions"][0] == version
    assert out["infer_version"] == str(version)
    assert out["input"] == ["input", "FP32", [-1, 1, 8, 8]]
    assert out["live"] is True
    assert out["not_found"] == "NotFound"
    assert out["bad_shape"] == "InvalidArgument"
    assert out["follow_seqs"] == list(range(1, len(trained["events"]) + 1))
    cli = suite.maas("predict", "digits", "-i", str(tmp_path / "x.npy"), "--raw", "--json").json()
    expected = np.asarray(cli["outputs"]["logits"]["data"], dtype=np.float32)
    for key in ("predict", "infer", "async"):
        assert np.array_equal(np.asarray(out[key], dtype=np.float32), expected), key
