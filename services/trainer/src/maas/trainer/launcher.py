"""Starting, watching and stopping worker processes.

Every job runs outside the server process, in its own session (process
group). A single-process job takes a warm worker - a process that has
already imported torch and waits for a job on stdin - and a fresh one is
started in its place. A job with world_size > 1 runs under
torch.distributed.run. Workers report on their stdout pipe as JSON lines;
stderr is collected as log lines. If the trainer dies, the kernel sends its
workers SIGTERM (PR_SET_PDEATHSIG, set by each child), so no training
outlives its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger("maas.trainer.launcher")

PR_SET_PDEATHSIG = 1
LINE_LIMIT = 1024 * 1024
# Below this many usable CPUs a replacement warm worker waits for the job that took one to end: its imports
# (torch, torchvision, scikit-learn, transformers: 14-19 CPU s on a 2-core machine) would otherwise compete
# with that job's first epochs for the same cores.
SPARE_CPUS_FOR_EARLY_REFILL = 4


def refill_at_once() -> bool:
    """Whether this machine has cores to spare for a warm worker's imports while a job trains."""
    return len(os.sched_getaffinity(0)) >= SPARE_CPUS_FOR_EARLY_REFILL


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when our parent exits (called by the child itself).

    Doing this in the child rather than in a preexec_fn keeps process
    creation on the fast spawn path. A parent that died before the call is
    caught by comparing the parent pid with the one it passed down.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    expected = os.environ.get("MAAS_PARENT_PID")
    if expected and "LOCAL_RANK" not in os.environ and os.getppid() != int(expected):
        os._exit(75)


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["MAAS_PARENT_PID"] = str(os.getpid())
    # Stale rendezvous data otherwise breaks torchrun's own restarts (pytorch#135712).
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    env.update(extra or {})
    return env


class WorkerProcess:
    """One launched job: a worker, or a torch.distributed.run agent and its group."""

    def __init__(self, proc: asyncio.subprocess.Process, job_dir: Path) -> None:
        self.proc = proc
        self.job_dir = job_dir

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def events(self) -> AsyncIterator[dict[str, object]]:
        """Decoded JSON lines from stdout; anything else becomes a log line."""
        assert self.proc.stdout is not None
        while True:
            try:
                raw = await self.proc.stdout.readline()
            except ValueError:  # a line over the limit
                continue
            if not raw:
                return
            text = raw.decode(errors="replace").strip()
            if not text:
                continue
            try:
                event = json.loads(text)
                if isinstance(event, dict) and isinstance(event.get("kind"), str):
                    yield event
                    continue
            except ValueError:
                pass
            yield {"kind": "log", "level": "INFO", "message": text[:2000]}

    async def stderr_lines(self) -> AsyncIterator[str]:
        assert self.proc.stderr is not None
        while True:
            try:
                raw = await self.proc.stderr.readline()
            except ValueError:
                continue
            if not raw:
                return
            yield raw.decode(errors="replace").rstrip()[:2000]

    async def wait(self) -> int:
        return await self.proc.wait()

    def signal_all(self, sig: int) -> None:
        """The process group, plus torchrun's workers (they run in sessions of their own)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
        for pid in self._group_workers():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _group_workers(self) -> list[int]:
        pids = []
        for pid_file in self.job_dir.glob("worker-*.pid"):
            try:
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue
            if str(self.job_dir) in cmdline and pid != self.proc.pid:
                pids.append(pid)
        return pids

    async def stop(self, grace: float) -> int:
        """SIGTERM (workers checkpoint and exit), then SIGKILL after `grace`."""
        if self.proc.returncode is None:
            self.signal_all(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=grace)
            except TimeoutError:
                pass
        self.signal_all(signal.SIGKILL)
        return await self.proc.wait()


async def _spawn(args: list[str], env: dict[str, str], stdin: bool) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
        limit=LINE_LIMIT,
    )


class Launcher:
    def __init__(self, warm_workers: int) -> None:
        self._warm_target = warm_workers
        self._warm: list[asyncio.subprocess.Process] = []
        self._refills: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        await self._refill()

    async def _refill(self) -> None:
        while not self._closed and len(self._warm) < self._warm_target:
            self._warm.append(await _spawn([sys.executable, "-m", "maas.trainer.worker", "--warm"], worker_env(), True))

    async def single(self, job_dir: Path) -> WorkerProcess:
        """A worker for a single-process job, warm if one is ready."""
        proc = None
        while self._warm:
            candidate = self._warm.pop(0)
            if candidate.returncode is None:
                proc = candidate
                break
        if proc is None:
            proc = await _spawn([sys.executable, "-m", "maas.trainer.worker", "--warm"], worker_env(), True)
        assert proc.stdin is not None
        proc.stdin.write((json.dumps({"job_dir": str(job_dir)}) + "\n").encode())
        await proc.stdin.drain()
        proc.stdin.close()
        refill = asyncio.get_running_loop().create_task(
            self._refill() if refill_at_once() else self._refill_after(proc)
        )
        self._refills.add(refill)
        refill.add_done_callback(self._refills.discard)
        return WorkerProcess(proc, job_dir)

    async def _refill_after(self, proc: asyncio.subprocess.Process) -> None:
        """Start the replacement once `proc` (the job's worker) has exited."""
        await proc.wait()
        await self._refill()

    async def group(self, job_dir: Path, world_size: int, max_restarts: int) -> WorkerProcess:
        """A torch.distributed.run agent with `world_size` local workers."""
        args = [
            sys.executable,
            "-m",
            "maas.trainer.worker.agent",
            "--standalone",
            "--nnodes=1",
            f"--nproc-per-node={world_size}",
            f"--max-restarts={max_restarts}",
            "--monitor-interval=0.5",
            "-m",
            "maas.trainer.worker",
            "--job-dir",
            str(job_dir),
        ]
        env = worker_env({"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        return WorkerProcess(await _spawn(args, env, False), job_dir)

    async def close(self) -> None:
        self._closed = True
        for proc in self._warm:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._warm.clear()
