"""`maas up`: the whole suite on one machine, supervised; one Ctrl-C stops it.

Each service runs as its own process (exactly what a container would run): the
registry first, then - once it reports SERVING through grpc.health.v1 - the
trainer and the inference service together. Their output is shown with a
prefix per service. A service that cannot start the first time stops the suite
with its reason. Once the suite is up, a service that dies is restarted with
capped exponential backoff on the ports it had (so the others, and clients, find
it where it was) while the others keep serving; each death and each return is
logged with the exit status. SIGINT or SIGTERM stops them in reverse order,
each with its own graceful shutdown.
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
from typing import TypeVar
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maas.common.retry import RetryPolicy

T = TypeVar("T")


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
# The inference service's HTTP/REST port, printed on a line of its own before the one above.
HTTP_LISTENING = re.compile(r"^(\w+) http listening on (\S+)$")

# Restarts: 1 s, 2 s, 4 s ... at most 30 s apart; a service that served for STABLE_SECONDS
# before it died starts again from the shortest pause.
BACKOFF = RetryPolicy(attempts=None, initial_backoff=1.0, max_backoff=30.0, multiplier=2.0, jitter=0.2)
STABLE_SECONDS = 60.0
START_TIMEOUT = 120.0


def _future() -> asyncio.Future[tuple[str, str]]:
    return asyncio.get_running_loop().create_future()


@dataclass
class Started:
    svc: ServiceDef
    proc: asyncio.subprocess.Process
    # The address and metrics URL the service reported, known once it has bound its ports
    # (any of them may be 0 in the environment: the service picks a free one).
    listening: asyncio.Future[tuple[str, str]] = field(default_factory=_future)
    http: str = ""  # the HTTP/REST URL, for a service that serves one


async def wait_serving(started: Started, timeout: float = START_TIMEOUT) -> str:
    """The service's real address, once it has printed it and reports SERVING."""
    deadline = time.monotonic() + timeout
    while not started.listening.done():
        if started.proc.returncode is not None:
            raise RuntimeError(f"exited with {exit_status(started.proc.returncode)} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"did not report its address after {timeout:.0f}s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(started.listening), 0.2)
    address = started.listening.result()[0]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if started.proc.returncode is not None:
                raise RuntimeError(f"exited with {exit_status(started.proc.returncode)} while starting")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return address
            await asyncio.sleep(0.2)
    raise RuntimeError(f"not SERVING on {address} after {timeout:.0f}s")


def exit_status(code: int) -> str:
    """`code 1`, or `signal SIGKILL` for a process a signal ended (asyncio's negative codes)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


def say(text: str) -> None:
    print(f"maas up: {text}", file=sys.stderr, flush=True)


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
        web = HTTP_LISTENING.match(text.strip())
        if web and web.group(1) == name:
            started.http = web.group(2)


class Supervisor:
    """The suite's processes: starts them, restarts the ones that die, stops them all."""

    def __init__(self, names: list[str], stop: asyncio.Event) -> None:
        self.names = names
        self.stop = stop
        self.env = dict(os.environ)
        self.env["PYTHONUNBUFFERED"] = "1"
        # The default policy: every model's production alias is served under its name (train, promote, predict).
        self.env.setdefault("MAAS_INFERENCE_SERVE_ALIAS", "production")
        self.color = sys.stdout.isatty()
        self.current: dict[str, Started] = {}
        self.relays: list[asyncio.Task[None]] = []

    async def spawn(self, svc: ServiceDef) -> Started:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            svc.module,
            "serve",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        one = Started(svc, proc)
        self.relays.append(asyncio.create_task(_relay(one, proc.stdout, self.color)))
        self.current[svc.name] = one
        return one

    async def until_stopped(self, waiting: Awaitable[T]) -> T | None:
        """`waiting`'s result, or None (with `waiting` cancelled) once Ctrl-C or SIGTERM came first."""
        task = asyncio.ensure_future(waiting)
        stopping = asyncio.create_task(self.stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
            return None
        return task.result()

    def pin_ports(self, one: Started) -> None:
        """A restarted service binds the ports it got the first time, where the others and clients look."""
        address, metrics = one.listening.result()
        self.env[f"{one.svc.prefix}PORT"] = address.rpartition(":")[2]
        if metrics and (port := urlsplit(metrics).port):
            self.env[f"{one.svc.prefix}METRICS_PORT"] = str(port)
        if one.http and (port := urlsplit(one.http).port):
            self.env[f"{one.svc.prefix}HTTP_PORT"] = str(port)

    async def start_all(self) -> bool:
        """Start the suite; False once stopped first. RuntimeError: a service did not come up."""
        # The registry first; the trainer and inference only need it, so they start together,
        # told the address the registry actually got.
        waves = [[s for s in SERVICES[:1] if s.name in self.names], [s for s in SERVICES[1:] if s.name in self.names]]
        for wave in waves:
            if not wave:
                continue
            procs = [await self.spawn(svc) for svc in wave]
            ready = asyncio.gather(*(_named(one.svc, wait_serving(one)) for one in procs))
            addresses = await self.until_stopped(ready)
            if addresses is None:
                return False
            for one in procs:
                self.pin_ports(one)
            if wave[0] is SERVICES[0]:
                self.env.setdefault("MAAS_TRAINER_REGISTRY_ADDRESS", addresses[0])
                self.env.setdefault("MAAS_INFERENCE_REGISTRY_ADDRESS", addresses[0])
        return True

    async def supervise(self, svc: ServiceDef) -> None:
        """Restart `svc` whenever it dies, until the suite is stopped."""
        attempt = 0
        up_since = time.monotonic()
        while True:
            code = await self.until_stopped(self.current[svc.name].proc.wait())
            if code is None:
                return
            served = time.monotonic() - up_since
            say(f"{svc.name} exited with {exit_status(code)} after {served:.1f}s of serving")
            if served >= STABLE_SECONDS:
                attempt = 0
            while True:  # until it serves again
                attempt += 1
                pause = BACKOFF.delay(attempt)
                say(f"restarting {svc.name} in {pause:.1f}s (restart {attempt})")
                if await self.until_stopped(asyncio.sleep(pause, result=True)) is None:
                    return
                again = await self.spawn(svc)
                try:
                    address = await self.until_stopped(wait_serving(again))
                except RuntimeError as exc:
                    say(f"{svc.name} {exc}")
                    await _stop([again])
                    continue
                if address is None:
                    return
                break
            up_since = time.monotonic()
            say(f"{svc.name} is back on {address} (pid {again.proc.pid})")

    async def stop_all(self) -> None:
        await _stop(list(reversed(self.current.values())))
        for relay in self.relays:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(relay, 2)


async def run_suite(names: list[str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    suite = Supervisor(names, stop)
    try:
        if not await suite.start_all():
            return 0
        _summary(list(suite.current.values()))
        await asyncio.gather(*(suite.supervise(one.svc) for one in list(suite.current.values())))
        return 0
    except RuntimeError as exc:
        say(str(exc))
        return 1
    finally:
        await suite.stop_all()


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
        extra = f"  http {one.http}" if one.http else ""
        extra += f"  metrics {metrics}" if metrics else ""
        lines.append(f"  {one.svc.name:<10} {address:<22}{extra}")
    lines.append(f"  state in {os.path.abspath(os.environ.get('MAAS_REGISTRY_DATA_DIR', '.maas'))}")
    lines.append("  A service that dies is restarted; Ctrl-C stops everything.")
    print("\n".join(lines) + "\n", flush=True)


async def _stop(started: list[Started]) -> None:
    """SIGTERM each in turn (their graceful shutdown), SIGKILL one that takes over 30 s."""
    for proc in [one.proc for one in started]:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
