"""`maas up`: the whole suite from one command, and one SIGINT (Ctrl-C) stops all of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.support import MAAS, maas

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_up_starts_every_service_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    assert MAAS is not None
    ports = {name: _free_port() for name in ("REGISTRY", "TRAINER", "INFERENCE")}
    env = {
        **os.environ,
        **{f"MAAS_{name}_PORT": str(port) for name, port in ports.items()},
        **{f"MAAS_{name}_METRICS_PORT": "0" for name in ports},
        "MAAS_REGISTRY_DATA_DIR": str(tmp_path),
        "MAAS_TRAINER_DATA_DIR": str(tmp_path),
        "MAAS_INFERENCE_CACHE_DIR": str(tmp_path / "cache"),
    }
    log = tmp_path / "up.log"
    up = subprocess.Popen([MAAS, "up"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "maas is up" not in log.read_text():
            assert up.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        addresses = {f"MAAS_{name}_ADDRESS": f"127.0.0.1:{port}" for name, port in ports.items()}
        status = maas("status", "--json", env=addresses)
        assert status.rc == 0, status.stdout + status.stderr
        assert {row["status"] for row in status.json()} == {"SERVING"}
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
