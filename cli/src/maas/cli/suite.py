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
import re
import signal
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ServiceDef:
    name: str
    module: str
    prefix: str


SERVICES = (
    ServiceDef("registry", "maas.registry", "MAAS_REGISTRY_"),
    ServiceDef("trainer", "maas.trainer", "MAAS_TRAINER_"),
    ServiceDef("inference", "maas.inference", "MAAS_INFERENCE_"),
)
COLORS = {"registry": "\033[36m", "trainer": "\033[35m", "inference": "\033[33m"}


# What each service prints once it is bound (maas.common.server.serve_forever).
LISTENING = re.compile(r"^(\w+) listening on (\S+?)(?:, metrics on (\S+))?$")


def _future() -> asyncio.Future[tuple[str, str]]:
    return asyncio.get_running_loop().create_future()


@dataclass
class Started:
    svc: ServiceDef
    proc: asyncio.subprocess.Process
    # The address and metrics URL the service reported, known once it has bound its ports
    # (any of them may be 0 in the environment: the service picks a free one).
    listening: asyncio.Future[tuple[str, str]] = field(default_factory=_future)


async def wait_serving(started: Started, timeout: float = 120.0) -> str:
    """The service's real address, once it has printed it and reports SERVING."""
    deadline = time.monotonic() + timeout
    while not started.listening.done():
        if started.proc.returncode is not None:
            raise RuntimeError(f"exited with code {started.proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"did not report its address after {timeout:.0f}s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(started.listening), 0.2)
    address = started.listening.result()[0]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if started.proc.returncode is not None:
                raise RuntimeError(f"exited with code {started.proc.returncode} while starting")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return address
            await asyncio.sleep(0.2)
    raise RuntimeError(f"not SERVING on {address} after {timeout:.0f}s")


async def _relay(started: Started, stream: asyncio.StreamReader, color: bool) -> None:
    name = started.svc.name
    tag = f"{COLORS.get(name, '')}{name:>9}\033[0m |" if color else f"{name:>9} |"
    while line := await stream.readline():
        text = line.decode(errors="replace")
        sys.stdout.write(f"{tag} {text}")
        sys.stdout.flush()
        match = LISTENING.match(text.strip())
        if match and match.group(1) == name and not started.listening.done():
            started.listening.set_result((match.group(2), match.group(3) or ""))


async def run_suite(names: list[str]) -> int:
    color = sys.stdout.isatty()
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    started: list[Started] = []
    relays: list[asyncio.Task[None]] = []
    code = 0
    try:
        # The registry first; the trainer and inference only need it, so they start together,
        # told the address the registry actually got.
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
                one = Started(svc, proc)
                relays.append(asyncio.create_task(_relay(one, proc.stdout, color)))
                started.append(one)
                procs.append(one)
            ready: asyncio.Future[list[str]] = asyncio.gather(*(_named(one.svc, wait_serving(one)) for one in procs))
            stopping: asyncio.Future[Any] = asyncio.create_task(stop.wait())
            await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                ready.cancel()
                return 0
            stopping.cancel()
            addresses = ready.result()
            if wave[0] is SERVICES[0]:
                env.setdefault("MAAS_TRAINER_REGISTRY_ADDRESS", addresses[0])
                env.setdefault("MAAS_INFERENCE_REGISTRY_ADDRESS", addresses[0])
        _summary(started)
        exits = [asyncio.create_task(one.proc.wait()) for one in started]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            dead = [one.svc.name for one in started if one.proc.returncode is not None]
            print(f"maas up: {', '.join(dead)} stopped unexpectedly; stopping the suite", file=sys.stderr)
            code = 1
    except RuntimeError as exc:
        print(f"maas up: {exc}", file=sys.stderr)
        code = 1
    finally:
        await _stop_all(started)
        for relay in relays:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(relay, 2)
    return code


async def _named(svc: ServiceDef, waiting: Awaitable[str]) -> str:
    try:
        return await waiting
    except RuntimeError as exc:
        raise RuntimeError(f"{svc.name} {exc}") from None


def summary_addresses(text: str) -> dict[str, str]:
    """The addresses in the "maas is up:" summary of `maas up`'s output (for scripts that start it)."""
    _, _, summary = text.partition("\nmaas is up:\n")
    names = "|".join(svc.name for svc in SERVICES)
    return dict(re.findall(rf"^  ({names}) +(\S+)", summary, re.MULTILINE))


def _summary(started: list[Started]) -> None:
    lines = ["", "maas is up:"]
    for one in started:
        address, metrics = one.listening.result()
        extra = f"  metrics {metrics}" if metrics else ""
        lines.append(f"  {one.svc.name:<10} {address:<22}{extra}")
    lines.append(f"  state in {os.path.abspath(os.environ.get('MAAS_REGISTRY_DATA_DIR', '.maas'))}")
    lines.append("  Ctrl-C stops everything.")
    print("\n".join(lines) + "\n", flush=True)


async def _stop_all(started: list[Started]) -> None:
    for proc in reversed([one.proc for one in started]):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
