"""`make demo`'s script, against the running suite it finds through MAAS_*_ADDRESS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Suite

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parents[2] / "demo" / "digits.py"


def test_demo_trains_serves_and_classifies_held_out_digits(suite: Suite) -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--model", "demo-digits", "--epochs", "4"],
        env={**os.environ, **suite.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "using the running suite" in proc.stdout
    match = re.search(r"classified (\d+) held-out digits: accuracy ([0-9.]+)", proc.stdout)
    assert match, proc.stdout[-2000:]
    assert int(match.group(1)) == 359  # 20% of scikit-learn's 1,797 digits
    assert float(match.group(2)) >= 0.9
    served = suite.maas("serving", "ls", "--json").json()
    assert any(m["model"] == "demo-digits" and m["state"] == "READY" for m in served)
