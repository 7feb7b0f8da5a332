"""When the trainer refills its warm worker: at once with cores to spare, after the job on a small machine."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from maas.trainer import launcher

# Stands in for a warm worker: reads its job line, then exits when its stdin closes (as the worker's job ends).
FAKE_WORKER = "import sys, time; sys.stdin.readline(); time.sleep(float(sys.argv[1]))"


@pytest.mark.parametrize(("cores", "refilled_during_job"), [(2, False), (8, True)])
async def test_the_replacement_warm_worker_waits_for_the_job_on_a_small_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, refilled_during_job: bool
) -> None:
    spawned: list[float] = []
    loop = asyncio.get_running_loop()

    async def spawn(args: list[str], env: dict[str, str], stdin: bool) -> asyncio.subprocess.Process:
        spawned.append(loop.time())
        return await asyncio.create_subprocess_exec(
            sys.executable, "-c", FAKE_WORKER, "1.0", stdin=asyncio.subprocess.PIPE
        )

    monkeypatch.setattr(launcher, "_spawn", spawn)
    monkeypatch.setattr(launcher.os, "sched_getaffinity", lambda pid: set(range(cores)))
    pool = launcher.Launcher(warm_workers=1)
    await pool.start()
    assert len(spawned) == 1
    job = await pool.single(tmp_path)
    await asyncio.sleep(0.3)  # the job's worker is still running (it lives 1 s)
    assert job.proc.returncode is None
    assert (len(spawned) == 2) == refilled_during_job, spawned
    await job.proc.wait()
    await asyncio.wait_for(asyncio.gather(*pool._refills), timeout=30)
    assert len(spawned) == 2 and len(pool._warm) == 1, "a warm worker is ready for the next job once this one ended"
    pool._closed = True
    for proc in pool._warm:
        proc.kill()
        await proc.wait()
