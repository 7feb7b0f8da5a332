"""`maas up`: the whole suite from one command, and one SIGINT (Ctrl-C) stops all of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.support import MAAS, maas

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_up_starts_every_service_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    """Every port 0: `maas up` prints the addresses the services got and wires the registry's to the others."""
    assert MAAS is not None
    names = ("REGISTRY", "TRAINER", "INFERENCE")
    env = {
        **os.environ,
        **{f"MAAS_{name}_PORT": "0" for name in names},
        **{f"MAAS_{name}_METRICS_PORT": "0" for name in names},
        "MAAS_REGISTRY_DATA_DIR": str(tmp_path),
        "MAAS_TRAINER_DATA_DIR": str(tmp_path),
        "MAAS_INFERENCE_CACHE_DIR": str(tmp_path / "cache"),
    }
    for name in ("TRAINER", "INFERENCE"):
        env.pop(f"MAAS_{name}_REGISTRY_ADDRESS", None)
    log = tmp_path / "up.log"
    up = subprocess.Popen([MAAS, "up"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops everything" not in log.read_text():
            assert up.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        summary = log.read_text().split("maas is up:", 1)[1]
        found = dict(re.findall(r"^\s+(registry|trainer|inference)\s+(\S+:\d+)", summary, re.MULTILINE))
        addresses = {f"MAAS_{name}_ADDRESS": found[name.lower()] for name in names}
        assert all(not address.endswith(":0") for address in addresses.values()), summary
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
