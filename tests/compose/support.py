"""docker-compose.yml as Debian's docker-compose resolves it (`docker-compose config`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
MAAS_SERVICES = ("registry", "trainer", "inference")


def compose_config(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The validated, interpolated configuration; fails the test when docker-compose rejects the file."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed: `make install-tools` installs Debian's package"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
    proc = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}
