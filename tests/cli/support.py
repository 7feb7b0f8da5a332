"""Running the real `maas` command against real services, and a TCP proxy that can cut streams.

Nothing here imports maas.oip: tritonclient (used by the inference tests in
the same pytest process) registers the same protobuf symbols.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAAS = shutil.which("maas", path=str(Path(sys.executable).parent)) or shutil.which("maas")


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def maas(*args: str, env: dict[str, str], timeout: float = 240, cwd: Path | None = None) -> Result:
    """One invocation of the installed `maas` command (a separate process, as a user runs it)."""
    assert MAAS is not None, "the maas command is not installed in this environment"
    proc = subprocess.run(
        [MAAS, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result) -> None:
    """A failure is a non-zero exit and one line on stderr, never a traceback."""
    assert result.rc != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("maas: "), result.stderr
    assert "Traceback" not in result.stderr


class CuttableProxy:
    """A TCP forwarder on 127.0.0.1 whose open connections can be dropped at will.

    Clients that go through it see a real network failure mid-stream; new
    connections keep being accepted and forwarded.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every open connection (RST-like for both sides)."""
        self.cuts += 1
        self._drop()

    def _drop(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self._drop()
