"""`maas up`: the whole suite from one command, and one SIGINT (Ctrl-C) stops all of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.cli.support import MAAS, maas

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


NAMES = ("REGISTRY", "TRAINER", "INFERENCE")


def _suite_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        **{f"MAAS_{name}_PORT": "0" for name in NAMES},
        **{f"MAAS_{name}_METRICS_PORT": "0" for name in NAMES},
        "MAAS_REGISTRY_DATA_DIR": str(tmp_path),
        "MAAS_TRAINER_DATA_DIR": str(tmp_path),
        "MAAS_INFERENCE_CACHE_DIR": str(tmp_path / "cache"),
        "MAAS_INFERENCE_HTTP_PORT": "0",
        **extra,
    }
    for name in ("TRAINER", "INFERENCE"):
        env.pop(f"MAAS_{name}_REGISTRY_ADDRESS", None)
    return env


def _wait_for(log: Path, text: str, up: subprocess.Popen[bytes], timeout: float = 180) -> str:
    """The log once `text` is in it; fails if `maas up` exits or the text does not come."""
    deadline = time.monotonic() + timeout
    while text not in (content := log.read_text()):
        assert up.poll() is None, content[-3000:]
        assert time.monotonic() < deadline, content[-3000:]
        time.sleep(0.3)
    return content


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _addresses(log_text: str) -> dict[str, str]:
    summary = log_text.split("maas is up:", 1)[1]
    found = dict(re.findall(r"^\s+(registry|trainer|inference)\s+(\S+:\d+)", summary, re.MULTILINE))
    return {f"MAAS_{name}_ADDRESS": found[name.lower()] for name in NAMES if name.lower() in found}


def test_up_starts_every_service_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    """Every port 0: `maas up` prints the addresses the services got and wires the registry's to the others."""
    assert MAAS is not None
    log = tmp_path / "up.log"
    up = subprocess.Popen([MAAS, "up"], env=_suite_env(tmp_path), stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        addresses = _addresses(_wait_for(log, "Ctrl-C stops everything", up))
        assert all(not address.endswith(":0") for address in addresses.values()), addresses
        status = maas("status", "--json", env=addresses)
        assert status.rc == 0, status.stdout + status.stderr
        assert {row["status"] for row in status.json()} == {"SERVING"}
        # The inference service asks the registry it was given: a missing model is not found, not unreachable.
        missing = maas("serving", "load", "no-such-model", env=addresses)
        assert missing.rc == 1 and "unavailable" not in missing.stderr, missing.stderr
        services = _children(up.pid)
        assert len(services) == 3
        up.send_signal(signal.SIGINT)
        assert up.wait(90) == 0, log.read_text()[-3000:]
        for pid in services:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        assert maas("status", env=addresses).rc == 1
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _services(up_pid: int) -> dict[str, int]:
    """service name -> pid of `maas up`'s children."""
    found = {}
    for pid in _children(up_pid):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        found[argv[2].decode().removeprefix("maas.")] = pid
    return found


def _serving(env: dict[str, str]) -> dict[str, str]:
    """model -> state, as `maas serving ls` shows what the inference service serves."""
    listed = maas("serving", "ls", "--json", env=env)
    return {row["model"]: row["state"] for row in listed.json()} if listed.rc == 0 else {}


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def _linear_onnx(path: Path) -> None:
    """A 4 -> 3 linear layer as ONNX, written with onnx's helpers (no torch to import)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
               (("w", (4, 3)), ("b", (3,)))]  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_a_service_that_dies_comes_back_where_it_was_while_the_others_keep_serving(tmp_path: Path) -> None:
    """SIGKILL inference, then the registry: each is restarted on its address, the other never stops.

    The trainer is left out (`--only`): it starts as the other two do and is supervised by the same code.
    """
    assert MAAS is not None
    _linear_onnx(tmp_path / "tiny.onnx")
    np.save(tmp_path / "x.npy", np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4))

    log = tmp_path / "up.log"
    # What inference serves comes from its settings: a restarted one serves it again.
    env = _suite_env(tmp_path, MAAS_INFERENCE_MODELS="tiny", **{f"MAAS_{n}_GRACE_SECONDS": "2" for n in NAMES})
    argv = [MAAS, "up", "--only", "registry", "inference"]
    up = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        started = _wait_for(log, "Ctrl-C stops everything", up)
        addresses = _addresses(started)
        # The summary names inference's HTTP/REST URL too; a restart binds it again.
        web = re.search(r"^\s+inference\s+\S+\s+http (http://\S+)", started.split("maas is up:", 1)[1], re.M)
        assert web is not None, started[-2000:]
        model_ready = web.group(1) + "/v2/models/tiny/ready"
        pushed = maas("push", "tiny", str(tmp_path / "tiny.onnx"), "--promote", "production", env=addresses)
        assert pushed.rc == 0, pushed.stderr
        _until(lambda: _serving(addresses).get("tiny") == "READY", "inference follows tiny@production")
        before = maas("predict", "tiny", "--input", str(tmp_path / "x.npy"), "--raw", "--json", env=addresses)
        assert before.rc == 0, before.stderr
        pids = _services(up.pid)
        assert set(pids) == {"registry", "inference"}

        os.kill(pids["inference"], signal.SIGKILL)
        _wait_for(log, "inference exited with signal SIGKILL", up, timeout=30)
        # While inference is away the registry answers.
        shown = maas("versions", "show", "tiny@production", "--json", env=addresses)
        assert shown.rc == 0 and shown.json()["version"] == 1, shown.stderr
        back = _wait_for(log, "inference is back on", up, timeout=120)
        assert f"inference is back on {addresses['MAAS_INFERENCE_ADDRESS']} " in back, back[-3000:]
        # Serving what its settings say, without anyone loading it again, with the same answer.
        assert _serving(addresses) == {"tiny": "READY"}
        assert _http_status(model_ready) == 200
        after = maas("predict", "tiny", "--input", str(tmp_path / "x.npy"), "--raw", "--json", env=addresses)
        assert after.rc == 0 and after.json() == before.json(), after.stderr
        now = _services(up.pid)
        assert now["inference"] != pids["inference"]
        assert now["registry"] == pids["registry"]

        os.kill(now["registry"], signal.SIGKILL)
        _wait_for(log, "registry exited with signal SIGKILL", up, timeout=30)
        assert _serving(addresses) == {"tiny": "READY"}  # inference serves on without its registry
        back = _wait_for(log, "registry is back on", up, timeout=120)
        assert f"registry is back on {addresses['MAAS_REGISTRY_ADDRESS']} " in back, back[-3000:]
        shown = maas("versions", "show", "tiny@production", "--json", env=addresses)
        assert shown.rc == 0 and shown.json()["version"] == 1, shown.stderr
        latest = _services(up.pid)
        assert latest["inference"] == now["inference"]
        again = maas("predict", "tiny", "--input", str(tmp_path / "x.npy"), "--raw", "--json", env=addresses)
        assert again.rc == 0 and again.json() == before.json(), again.stderr

        up.send_signal(signal.SIGINT)
        assert up.wait(90) == 0, log.read_text()[-3000:]
        for pid in latest.values():
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
