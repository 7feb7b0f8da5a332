"""Failures are one line on stderr and a non-zero exit; jobs that do not succeed fail `--watch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Suite
from tests.cli.support import MAAS, CuttableProxy, assert_one_line_error, maas

pytestmark = pytest.mark.slow


def test_not_found_and_invalid_arguments(suite: Suite, tmp_path: Path) -> None:
    for args in (
        ("models", "show", "no-such-model"),
        ("versions", "show", "no-such-model/3"),
        ("versions", "show", "../../etc/passwd"),
        ("jobs", "show", "no-such-job"),
        ("predict", "no-such-model", "--input", str(tmp_path / "missing.npy")),
        ("train", "--model", "no-such-net", "--dataset", "digits"),
        ("train", "--model", "mlp"),
        ("train", "--spec", str(tmp_path / "missing.yaml")),
        ("metrics", "no-such-model", "1"),
    ):
        result = suite.maas(*args)
        assert_one_line_error(result)
        assert result.rc == 1, (args, result.stderr)


def test_bad_spec_file_is_rejected_before_submitting(suite: Suite, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {name: mlp}\ndataset: {name: digits}\nepochs: many\n")
    assert_one_line_error(suite.maas("train", "-f", str(spec)))
    spec.write_text("model: {name: mlp}\ndataset: {name: digits}\nno_such_field: 1\n")
    assert_one_line_error(suite.maas("train", "-f", str(spec)))
    spec.write_text("model: [unclosed\n")
    assert_one_line_error(suite.maas("train", "-f", str(spec)))


def test_usage_errors_exit_2() -> None:
    result = maas("alias", "set", "only-model", env={})
    assert result.rc == 2
    assert "Traceback" not in result.stderr


def test_unreachable_service_is_one_line() -> None:
    env = {"MAAS_REGISTRY_ADDRESS": "127.0.0.1:1", "MAAS_TIMEOUT": "2"}
    result = maas("models", "ls", env=env)
    assert_one_line_error(result)
    assert "unavailable" in result.stderr


def test_flags_override_the_environment(suite: Suite) -> None:
    env = {"MAAS_REGISTRY_ADDRESS": "127.0.0.1:1"}
    result = suite.maas("models", "ls", "--json", "--registry", suite.registry.address, env=env)
    assert result.rc == 0, result.stderr
    before = suite.maas("--registry", suite.registry.address, "models", "ls", "--json", env=env)
    assert before.rc == 0, before.stderr


def test_watch_exits_non_zero_when_the_job_is_cancelled(suite: Suite) -> None:
    assert MAAS is not None
    args = [
        MAAS, "train", "--model", "lenet", "--dataset", "fake", "--dataset-arg", "num_samples=2000",
        "--dataset-arg", "image_size=16", "--epochs", "200", "--batch-size", "8", "--watch", "--json",
    ]  # fmt: skip
    watcher = subprocess.Popen(
        args, env={**os.environ, **suite.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert watcher.stdout is not None
    job_id = ""
    for line in watcher.stdout:
        if '"state"' in line and "JOB_STATE_RUNNING" in line:
            job_id = json.loads(line)["job_id"]
            break
    assert job_id, watcher.stderr.read() if watcher.stderr else ""
    # Ctrl-C stops watching, not the job: exit 130 and one line saying so.
    interrupted = subprocess.Popen([MAAS, "jobs", "watch", job_id], env={**os.environ, **suite.env},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert interrupted.stdout is not None
    assert interrupted.stdout.readline()  # it is watching
    interrupted.send_signal(signal.SIGINT)
    _, interrupted_err = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130
    assert len(interrupted_err.strip().splitlines()) == 1 and "Traceback" not in interrupted_err
    assert json.loads(suite.maas("jobs", "show", job_id, "--json").stdout)["state"] == "JOB_STATE_RUNNING"

    cancelled = suite.maas("jobs", "cancel", job_id, "--json")
    assert cancelled.rc == 0, cancelled.stderr
    assert cancelled.json()["state"] == "JOB_STATE_CANCELLED", "cancel prints the state after the cancel"
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 1, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["ok"] is False and final["job"]["state"] == "JOB_STATE_CANCELLED"
    assert "Traceback" not in err


def test_watch_resumes_after_the_connection_drops(suite: Suite) -> None:
    """A proxy between the CLI and the trainer cuts every connection mid-stream, twice."""
    proxy = CuttableProxy(suite.trainer.address)
    try:
        assert MAAS is not None
        env = {**os.environ, **suite.env, "MAAS_TRAINER_ADDRESS": proxy.address}
        args = [MAAS, "train", "--model", "mlp", "--dataset", "digits", "--epochs", "3", "--batch-size", "64",
                "--seed", "2", "--watch", "--json"]  # fmt: skip
        watcher = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert watcher.stdout is not None
        lines = []
        for line in watcher.stdout:
            lines.append(line)
            if '"epoch"' in line and proxy.cuts < 2:
                proxy.cut()
            if line.startswith('{"ok"'):
                break
        out, err = watcher.communicate(timeout=120)
        lines += out.splitlines()
    finally:
        proxy.close()
    records = [json.loads(x) for x in lines if x.strip()]
    events, final = records[:-1], records[-1]
    assert watcher.returncode == 0, err
    assert proxy.cuts == 2
    assert "resuming" in err
    seqs = [int(e["seq"]) for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "no event lost or repeated across reconnects"
    assert final["ok"] is True and final["job"]["state"] == "JOB_STATE_SUCCEEDED"
    assert [e["epoch"]["epoch"] for e in events if "epoch" in e] == [1, 2, 3]


def test_status_reports_each_service(suite: Suite) -> None:
    result = suite.maas("status", "--json")
    assert result.rc == 0, result.stderr
    assert {r["service"]: r["status"] for r in result.json()} == {
        "registry": "SERVING",
        "trainer": "SERVING",
        "inference": "SERVING",
    }
    down = suite.maas("status", "--json", env={"MAAS_INFERENCE_ADDRESS": "127.0.0.1:1"})
    assert down.rc == 1
    assert {r["service"]: r["status"] for r in down.json()}["inference"] == "UNREACHABLE"


def test_health_command_for_containers(suite: Suite) -> None:
    ok = subprocess.run([sys.executable, "-m", "maas.cli.health", suite.registry.address], capture_output=True)
    assert ok.returncode == 0
    bad = subprocess.run(
        [sys.executable, "-m", "maas.cli.health", "127.0.0.1:1", "--timeout", "1"], capture_output=True
    )
    assert bad.returncode == 1
