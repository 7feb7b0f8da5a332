"""The compose configuration itself works: each maas service's compose command runs with its compose
environment as a local process, against the local PostgreSQL.

Only what a container changes is translated: container hostnames become 127.0.0.1 (PostgreSQL with this
machine's credentials and a throwaway database; `registry:50051` the local registry), fixed ports become free
ones, bind addresses become loopback, and container paths become temporary directories. Everything else -
the commands, the settings, the health checks - is taken from `docker-compose config` as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from sklearn.datasets import load_digits
from sqlalchemy.engine import make_url

from tests.cli.support import maas
from tests.compose.support import MAAS_SERVICES, compose_config, environment
from tests.helpers import unused_port

pytestmark = pytest.mark.slow

PG_ADMIN_URL = os.environ.get("MAAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CONTAINER_ROOTS = ("/var/lib/maas", "/var/cache/maas")


@pytest.fixture
def database() -> Iterator[str]:
    name = f"maas_compose_{uuid.uuid4().hex[:10]}"
    admin = make_url(PG_ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Translator:
    """Container names, ports and paths -> this machine's."""

    def __init__(self, services: dict[str, Any], database: str, root: Path) -> None:
        self.database = database
        self.root = root
        self.ports: dict[str, str] = {}  # "registry:50051" -> "127.0.0.1:<free>"
        self.http_ports: dict[str, str] = {}  # service -> the free port its HTTP_PORT became
        for name in MAAS_SERVICES:
            port = environment(services[name])[f"MAAS_{name.upper()}_PORT"]
            self.ports[f"{name}:{port}"] = f"127.0.0.1:{unused_port()}"

    def env(self, name: str, compose_env: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, value in compose_env.items():
            if key.endswith("_DATABASE_URL"):
                url = make_url(value)
                assert url.host == "postgres", value  # the compose service
                admin = make_url(PG_ADMIN_URL)
                value = url.set(
                    host=admin.host, port=admin.port, username=admin.username, password=admin.password,
                    database=self.database,
                ).render_as_string(hide_password=False)  # fmt: skip
            elif key.endswith("_HOST") and value == "0.0.0.0":
                value = "127.0.0.1"
            elif key == f"MAAS_{name.upper()}_PORT":
                value = self.ports[f"{name}:{value}"].rsplit(":", 1)[1]
            elif key.endswith("_METRICS_PORT"):
                value = str(unused_port())
            elif key.endswith("_HTTP_PORT"):
                value = self.http_ports[name] = str(unused_port())
            elif value in self.ports:
                value = self.ports[value]
            elif value.startswith(CONTAINER_ROOTS):
                value = str(self.root / name / value.lstrip("/"))
            out[key] = value
        return out

    def argv(self, argv: list[str]) -> list[str]:
        out = []
        for arg in argv:
            if arg == "maas":
                arg = shutil.which("maas", path=str(Path(sys.executable).parent)) or "maas"
            elif arg == "python":
                arg = sys.executable
            elif arg.startswith("127.0.0.1:"):
                arg = next(local for key, local in self.ports.items() if key.endswith(arg.rsplit(":", 1)[1]))
            out.append(arg)
        return out


def _healthy(check: list[str], proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Run the compose health check until it passes (what `depends_on: service_healthy` waits for)."""
    deadline = time.monotonic() + timeout
    while subprocess.run(check, capture_output=True).returncode != 0:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not healthy:\n{log.read_text()[-3000:]}"
        time.sleep(1.0)  # each check is a Python process: leave the CPU to the starting service


def test_compose_services_work_as_configured(database: str, tmp_path: Path) -> None:
    services = compose_config()["services"]  # no MAAS_INFERENCE_MODELS: replicas serve what the registry declares
    tr = Translator(services, database, tmp_path)
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        svc = services[name]
        log = tmp_path / f"{name}-{len(procs)}.log"
        proc = subprocess.Popen(
            tr.argv(svc["command"]),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **tr.env(name, environment(svc))},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs[name] = proc
        _healthy(tr.argv(svc["healthcheck"]["test"][1:]), proc, log)

    try:
        for name in MAAS_SERVICES:  # compose's dependency order: registry first
            start(name)

        # The registry migrated PostgreSQL at start; the trainer its own tables beside.
        admin = make_url(PG_ADMIN_URL).set(drivername="postgresql", database=database)
        with psycopg.connect(admin.render_as_string(hide_password=False)) as conn:
            tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"alembic_version", "model_versions", "trainer_jobs"} <= tables

        cli_env = {
            "MAAS_REGISTRY_ADDRESS": tr.ports["registry:50051"],
            "MAAS_TRAINER_ADDRESS": tr.ports["trainer:50052"],
            "MAAS_INFERENCE_ADDRESS": tr.ports["inference:8001"],
            "MAAS_TIMEOUT": "30",
        }
        trained = maas(
            "train", "--model", "mlp", "--dataset", "digits", "--epochs", "2", "--batch-size", "32", "--lr", "0.05",
            "--register-as", "digits", "--promote", "production", "--watch", env=cli_env,
        )  # fmt: skip
        assert trained.rc == 0, trained.stderr

        # The artifact landed in the artifact root the compose file mounts as a volume.
        artifact_root = Path(tr.env("registry", environment(services["registry"]))["MAAS_REGISTRY_ARTIFACT_ROOT"])
        assert any(p.is_file() and p.stat().st_size > 0 for p in artifact_root.rglob("*"))

        # A deployment of another name, declared once in the registry.
        deployed = maas("deploy", "live", "--target", "digits/1", env=cli_env)
        assert deployed.rc == 0, deployed.stderr

        # A replica started now (`docker compose up --scale inference=N`, a restart) serves the
        # production version under the model's name and the deployment, with no load call.
        procs["inference"].terminate()
        procs["inference"].wait(30)
        start("inference")
        x = load_digits().data[:20].reshape(-1, 1, 8, 8).astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        deadline = time.monotonic() + 60
        while True:
            predicted = maas("predict", "digits", "-i", str(tmp_path / "x.npy"), "--json", env=cli_env)
            if predicted.rc == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert predicted.rc == 0, predicted.stderr
        answer = predicted.json()
        assert answer["version"] == "1"
        logits = np.asarray(answer["outputs"]["logits"]["data"], dtype=np.float32)
        assert logits.shape == (20, 10)

        # The same replica's HTTP/REST port, as the front's HTTP side reaches it: curl-style JSON.
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": x[:2].tolist()}]}
        )
        for served in ("digits", "live"):  # the model under its name, and the deployment
            url = f"http://127.0.0.1:{tr.http_ports['inference']}/v2/models/{served}/infer"
            with urllib.request.urlopen(
                urllib.request.Request(url, data=body.encode(), method="POST"), timeout=30
            ) as reply:
                (output,) = json.loads(reply.read())["outputs"]
            assert np.allclose(np.asarray(output["data"], dtype=np.float32).reshape(2, 10), logits[:2], atol=1e-5)
        shown = maas("deployments", "show", "live", "--json", env=cli_env).json()
        assert [state for state in shown["replica_states"].values()] == ["converged"], shown
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
