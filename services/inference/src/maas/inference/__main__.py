"""`python -m maas.inference` (also the `maas-inference` script).

With workers > 1 this process is a supervisor: it starts that many serving
processes on the same ports, gRPC's and HTTP's (SO_REUSEPORT: the kernel spreads
connections over them), forwards SIGTERM/SIGINT, and exits when any of them exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys

from prometheus_client import CollectorRegistry

from maas.common.server import InsecureConfiguration, configure_logging, security_of, serve_forever
from maas.inference.settings import InferenceSettings, http_settings, replica_id


async def _serve(settings: InferenceSettings) -> None:
    from maas.inference.app import InferenceApp

    metrics = CollectorRegistry()
    app = InferenceApp(settings, metrics if settings.metrics_port else None)
    await serve_forever(
        settings, app, name="inference", metrics_registry=metrics, server_options=[("grpc.so_reuseport", 1)]
    )


def refuse_exposure(settings: InferenceSettings) -> None:
    """InsecureConfiguration when a listener (gRPC, metrics or HTTP) would be exposed unprotected."""
    security_of(settings)
    if settings.http:
        security_of(http_settings(settings))


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket on host:port (0: a free port), held while the workers run.

    Holding it (rather than binding a free port and closing it again) keeps any other
    program from taking the port before the workers bind it with SO_REUSEPORT too; it
    never listens, so the kernel hands connections only to the workers.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except BaseException:
        sock.close()
        raise
    return sock


def _supervise(settings: InferenceSettings) -> int:
    with contextlib.ExitStack() as held:
        reserved = held.enter_context(reserve_port(settings.host, settings.port))
        http_port = 0
        if settings.http:  # the HTTP/REST port is shared the same way
            http = held.enter_context(reserve_port(settings.http_host or settings.host, settings.http_port))
            http_port = int(http.getsockname()[1])
        return _run_workers(settings, int(reserved.getsockname()[1]), http_port)


def _run_workers(settings: InferenceSettings, port: int, http_port: int = 0) -> int:
    children = []
    replica = replica_id(settings.model_copy(update={"port": port}))
    for index in range(settings.workers):
        env = dict(os.environ)
        env["MAAS_INFERENCE_WORKERS"] = "1"
        env["MAAS_INFERENCE_PORT"] = str(port)
        env["MAAS_INFERENCE_REPLICA_ID"] = f"{replica[:120]}-w{index}"  # each worker reports as its own replica
        if settings.http:
            env["MAAS_INFERENCE_HTTP_PORT"] = str(http_port)
        if settings.metrics_port:
            env["MAAS_INFERENCE_METRICS_PORT"] = str(settings.metrics_port + index)
        children.append(subprocess.Popen([sys.executable, "-m", "maas.inference"], env=env))

    running = {child.pid: child for child in children}

    signalled: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        # os.kill, not Popen.send_signal: that polls, and a poll reaps the child
        # behind os.wait's back (which then finds no child to wait for).
        signalled.append(signum)
        for pid in list(running):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while running:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        child = running.pop(pid, None)
        if child is None:
            continue
        child.returncode = os.waitstatus_to_exitcode(status)
        code = code or child.returncode
        if not signalled:  # a worker ended on its own: stop the others (once; a second SIGTERM kills)
            forward(signal.SIGTERM, None)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maas-inference", description="The maas inference service.")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.parse_args(argv)
    settings = InferenceSettings()
    configure_logging(settings.log_level)
    try:  # refused before torch and the models load (the app checks again as it binds)
        refuse_exposure(settings)
    except InsecureConfiguration as exc:
        print(f"inference: {exc}", file=sys.stderr, flush=True)
        return 2
    if settings.workers > 1:
        return _supervise(settings)
    asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
