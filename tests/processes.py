"""Services as real subprocesses, for what crosses a process boundary (kill, SIGTERM)."""

from __future__ import annotations

import atexit
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# "<service> listening on HOST:PORT[, metrics on URL]": the gRPC address (not inference's "inference http listening on").
LISTENING = re.compile(r"\w+ listening on (\S+?)(?:,|$)")


_STARTED: list[subprocess.Popen[str]] = []


def kill_at_exit(popen: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """A test that fails before it stops its server must not leave the server running once pytest exits."""
    _STARTED.append(popen)
    return popen


@atexit.register
def _kill_leftovers() -> None:
    for popen in _STARTED:
        if popen.poll() is None:
            popen.kill()


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[str]
    address: str
    log_path: Path

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_service(
    module: str, env: dict[str, str], log_path: Path, *, args: tuple[str, ...] = ("serve",), timeout: float = 60
) -> ServiceProcess:
    """Start `python -m module serve` and wait for its "listening on HOST:PORT" line."""
    proc = kill_at_exit(
        subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=log_path.open("w"),
            text=True,
            env={**os.environ, **env},
        )
    )
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            match = LISTENING.match(line)
            if match:
                return ServiceProcess(proc, match.group(1), log_path)
    finally:
        selector.close()
    proc.kill()
    proc.wait()
    raise AssertionError(f"{module} did not start:\n{log_path.read_text(errors='replace')[-4000:]}")


def registry_env(db_url: str, artifact_root: Path, **extra: str) -> dict[str, str]:
    return {
        "MAAS_REGISTRY_PORT": "0",
        "MAAS_REGISTRY_METRICS_PORT": "0",
        "MAAS_REGISTRY_DATABASE_URL": db_url,
        "MAAS_REGISTRY_ARTIFACT_ROOT": str(artifact_root),
        "MAAS_REGISTRY_EVENT_POLL_INTERVAL": "0.05",
        **extra,
    }


def start_suite(
    work: Path, env: dict[str, str] | None = None, **service_env: dict[str, str]
) -> dict[str, ServiceProcess]:
    """Registry, then trainer and inference side by side, as processes with their state under `work`.

    `env` goes to all three; `registry=`, `trainer=`, `inference=` add settings to one.
    """
    common = env or {}
    registry = start_service(
        "maas.registry",
        {
            **common,
            "MAAS_REGISTRY_PORT": "0",
            "MAAS_REGISTRY_METRICS_PORT": "0",
            "MAAS_REGISTRY_DATA_DIR": str(work / "registry"),
            "MAAS_REGISTRY_EVENT_POLL_INTERVAL": "0.05",
            "MAAS_REGISTRY_GRACE_SECONDS": "1",
            **service_env.get("registry", {}),
        },
        work / "registry.log",
    )
    trainer_env = {
        **common,
        "MAAS_TRAINER_PORT": "0",
        "MAAS_TRAINER_METRICS_PORT": "0",
        "MAAS_TRAINER_DATA_DIR": str(work / "trainer"),
        "MAAS_TRAINER_REGISTRY_ADDRESS": registry.address,
        "MAAS_TRAINER_DEFAULT_THREADS": "1",
        "MAAS_TRAINER_POLL_INTERVAL": "0.2",
        "MAAS_TRAINER_METRICS_SYNC_INTERVAL": "0.5",
        "MAAS_TRAINER_CANCEL_GRACE_SECONDS": "3",
        "MAAS_TRAINER_GRACE_SECONDS": "1",
        **service_env.get("trainer", {}),
    }
    inference_env = {
        **common,
        "MAAS_INFERENCE_PORT": "0",
        "MAAS_INFERENCE_METRICS_PORT": "0",
        "MAAS_INFERENCE_HTTP_PORT": "0",
        "MAAS_INFERENCE_REGISTRY_ADDRESS": registry.address,
        "MAAS_INFERENCE_CACHE_DIR": str(work / "inference-cache"),
        "MAAS_INFERENCE_GRACE_SECONDS": "1",
        "MAAS_INFERENCE_RECONNECT_INITIAL_SECONDS": "0.2",
        "MAAS_INFERENCE_RECONNECT_MAX_SECONDS": "1",
        **service_env.get("inference", {}),
    }
    with ThreadPoolExecutor(2) as pool:
        trainer = pool.submit(start_service, "maas.trainer", trainer_env, work / "trainer.log")
        inference = pool.submit(start_service, "maas.inference", inference_env, work / "inference.log")
        return {"registry": registry, "trainer": trainer.result(), "inference": inference.result()}


def stop_all(processes: list[ServiceProcess]) -> None:
    """SIGTERM to each, then wait for each (killing what does not stop)."""
    for proc in processes:
        proc.terminate()
    for proc in processes:
        try:
            proc.wait(30)
        finally:
            proc.stop()
