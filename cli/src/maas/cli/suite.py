"""`maas up`: the whole suite on one machine, one Ctrl-C to stop it.

Each service runs as its own process (exactly what a container would run):
the registry first, then - once it reports SERVING through grpc.health.v1 -
the trainer and the inference service together. Their output is shown with a prefix per service. SIGINT or
SIGTERM stops them in reverse order, each with its own graceful shutdown; if
one dies on its own, the others are stopped and `maas up` fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ServiceDef:
    name: str
    module: str
    prefix: str
    default_port: int
    default_metrics_port: int


SERVICES = (
    ServiceDef("registry", "maas.registry", "MAAS_REGISTRY_", 50051, 9101),
    ServiceDef("trainer", "maas.trainer", "MAAS_TRAINER_", 50052, 9102),
    ServiceDef("inference", "maas.inference", "MAAS_INFERENCE_", 8001, 8002),
)
COLORS = {"registry": "\033[36m", "trainer": "\033[35m", "inference": "\033[33m"}


def _port(svc: ServiceDef) -> int:
    return int(os.environ.get(f"{svc.prefix}PORT", svc.default_port))


def _address(svc: ServiceDef) -> str:
    host = os.environ.get(f"{svc.prefix}HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"{host}:{_port(svc)}"


async def wait_serving(address: str, proc: asyncio.subprocess.Process, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"exited with code {proc.returncode} while starting")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"not SERVING on {address} after {timeout:.0f}s")


async def _relay(name: str, stream: asyncio.StreamReader, color: bool) -> None:
    tag = f"{COLORS.get(name, '')}{name:>9}\033[0m |" if color else f"{name:>9} |"
    while line := await stream.readline():
        sys.stdout.write(f"{tag} {line.decode(errors='replace')}")
        sys.stdout.flush()


async def run_suite(names: list[str]) -> int:
    color = sys.stdout.isatty()
    env = dict(os.environ)
    registry = _address(SERVICES[0])
    env.setdefault("MAAS_TRAINER_REGISTRY_ADDRESS", registry)
    env.setdefault("MAAS_INFERENCE_REGISTRY_ADDRESS", registry)
    env["PYTHONUNBUFFERED"] = "1"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    started: list[tuple[ServiceDef, asyncio.subprocess.Process]] = []
    relays: list[asyncio.Task[None]] = []
    code = 0
    try:
        # The registry first; the trainer and inference only need it, so they start together.
        waves = [[svc for svc in SERVICES[:1] if svc.name in names], [svc for svc in SERVICES[1:] if svc.name in names]]
        for wave in waves:
            if not wave:
                continue
            procs = []
            for svc in wave:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    svc.module,
                    "serve",
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
                assert proc.stdout is not None
                relays.append(asyncio.create_task(_relay(svc.name, proc.stdout, color)))
                started.append((svc, proc))
                procs.append((svc, proc))
            ready: asyncio.Future[Any] = asyncio.gather(
                *(_named(svc, wait_serving(_address(svc), proc)) for svc, proc in procs)
            )
            stopping: asyncio.Future[Any] = asyncio.create_task(stop.wait())
            await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                ready.cancel()
                return 0
            stopping.cancel()
            ready.result()
        _summary(started)
        exits = [asyncio.create_task(p.wait()) for _, p in started]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            dead = [svc.name for svc, p in started if p.returncode is not None]
            print(f"maas up: {', '.join(dead)} stopped unexpectedly; stopping the suite", file=sys.stderr)
            code = 1
    except RuntimeError as exc:
        print(f"maas up: {exc}", file=sys.stderr)
        code = 1
    finally:
        await _stop_all(started)
        for relay in relays:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(relay, 2)
    return code


async def _named(svc: ServiceDef, waiting: Awaitable[None]) -> None:
    try:
        await waiting
    except RuntimeError as exc:
        raise RuntimeError(f"{svc.name} {exc}") from None


def _summary(started: list[tuple[ServiceDef, asyncio.subprocess.Process]]) -> None:
    lines = ["", "maas is up:"]
    for svc, _ in started:
        metrics = os.environ.get(f"{svc.prefix}METRICS_PORT", str(svc.default_metrics_port))
        extra = f"  metrics http://127.0.0.1:{metrics}/metrics" if metrics != "0" else ""
        lines.append(f"  {svc.name:<10} {_address(svc):<22}{extra}")
    lines.append(f"  state in {os.path.abspath(os.environ.get('MAAS_REGISTRY_DATA_DIR', '.maas'))}")
    lines.append("  Ctrl-C stops everything.")
    print("\n".join(lines) + "\n", flush=True)


async def _stop_all(started: list[tuple[ServiceDef, asyncio.subprocess.Process]]) -> None:
    for _svc, proc in reversed(started):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
