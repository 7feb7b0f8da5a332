"""`make demo`'s script, against the running suite it finds through MAAS_*_ADDRESS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Suite

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parents[2] / "demo" / "digits.py"
STEP = re.compile(r"^\[\s*[0-9.]+s\] (\d)/5\s+(.*)$", re.MULTILINE)


def run_demo(suite: Suite, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(DEMO), *args],
        env={**os.environ, **suite.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    return proc.stdout


def steps(stdout: str) -> dict[int, str]:
    return {int(number): text for number, text in STEP.findall(stdout)}


def versions(suite: Suite, model: str) -> list[int]:
    listed = suite.maas("versions", "ls", model, "--json")
    assert listed.rc == 0, listed.stderr
    return sorted(int(v["version"]) for v in listed.json())


def test_demo_trains_serves_and_classifies_held_out_digits(suite: Suite, trained: dict[str, Any]) -> None:
    users_digits = versions(suite, "digits")  # a user's own model of that name: the demo leaves it alone
    stdout = run_demo(suite, "--epochs", "4")
    assert "using the running suite" in stdout
    assert "demo-digits" in stdout.split("2/5")[0], "the demo says which model it writes to before it does"
    match = re.search(r"classified (\d+) held-out digits: accuracy ([0-9.]+)", stdout)
    assert match, stdout[-2000:]
    assert int(match.group(1)) == 359  # 20% of scikit-learn's 1,797 digits
    assert float(match.group(2)) >= 0.9
    served = suite.maas("serving", "ls", "--json").json()
    assert any(m["model"] == "demo-digits" and m["state"] == "READY" for m in served)
    assert versions(suite, "digits") == users_digits
    latest = versions(suite, "demo-digits")[-1]
    production = suite.maas("versions", "show", "demo-digits@production", "--json").json()
    assert int(production["version"]) == latest
    assert "not promoted" not in steps(stdout)[3] and "promoted" in steps(stdout)[3]


def test_demo_says_when_its_version_is_not_promoted(suite: Suite) -> None:
    run_demo(suite, "--model", "demo-twice", "--epochs", "8")
    best = suite.maas("versions", "show", "demo-twice@production", "--json").json()
    stdout = run_demo(suite, "--model", "demo-twice", "--epochs", "1")  # worse than the version before
    after = suite.maas("versions", "show", "demo-twice@production", "--json").json()
    assert after["version"] == best["version"], "production stays on the better version"
    assert versions(suite, "demo-twice")[-1] > int(best["version"])
    assert "not promoted" in steps(stdout)[3]
