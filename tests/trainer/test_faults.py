"""What a trainer must survive: cancel, killed workers, registry outages, restarts, DDP crashes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from maas.common.server import start_server
from maas.registry.app import RegistryApp
from maas.trainer.app import TrainerApp
from maas.v1 import registry_pb2 as rpb
from maas.v1 import trainer_pb2 as tpb
from maas.v1 import trainer_pb2_grpc
from tests.conftest import registry_settings
from tests.processes import start_service
from tests.trainer.conftest import collect, digits_spec, logs, long_spec, trainer_settings, wait_job


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def wait_for_epoch(stub, job_id: str, epoch: int = 1) -> None:
    await wait_job(stub, job_id, timeout=120, until=lambda j: j.epoch >= epoch or j.state not in (1, 2))


def worker_pid(job_dir: Path, rank: int = 0) -> int:
    return int((job_dir / f"worker-{rank}.pid").read_text())


def attempts_seen(events: list[tpb.JobEvent]) -> tuple[list[int], set[int]]:
    """The attempt of each RUNNING StateChange, in order, and the attempt numbers the log names."""
    states = [e.state.attempt for e in events if e.WhichOneof("kind") == "state" and e.state.state == 2]
    named = {int(n) for m in logs(events) for n in re.findall(r"attempt (\d+)", m)}
    return states, named


async def test_cancel_stops_the_worker_within_seconds(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=long_spec()))
    await wait_for_epoch(suite.trainer_stub, job.job_id)
    pid = worker_pid(suite.job_dir(job.job_id))
    assert alive(pid)
    await suite.trainer_stub.CancelJob(tpb.CancelJobRequest(job_id=job.job_id))
    done = await wait_job(suite.trainer_stub, job.job_id, timeout=15)
    assert done.state == tpb.JOB_STATE_CANCELLED
    assert not alive(pid)
    # Cancelling again, or a finished job, changes nothing.
    again = await suite.trainer_stub.CancelJob(tpb.CancelJobRequest(job_id=job.job_id))
    assert again.state == tpb.JOB_STATE_CANCELLED


async def test_cancel_a_queued_job(suite) -> None:
    spec = long_spec()
    jobs = [await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec)) for _ in range(3)]
    # The default limit is 2: the third waits in the queue.
    third = await suite.trainer_stub.CancelJob(tpb.CancelJobRequest(job_id=jobs[2].job_id))
    assert third.state == tpb.JOB_STATE_CANCELLED
    for job in jobs[:2]:
        await suite.trainer_stub.CancelJob(tpb.CancelJobRequest(job_id=job.job_id))
    for job in jobs:
        assert (await wait_job(suite.trainer_stub, job.job_id, timeout=30)).state == tpb.JOB_STATE_CANCELLED


async def test_killed_worker_resumes_from_its_checkpoint(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=long_spec(epochs=8)))
    await wait_for_epoch(suite.trainer_stub, job.job_id, 2)
    os.kill(worker_pid(suite.job_dir(job.job_id)), signal.SIGKILL)
    done = await wait_job(suite.trainer_stub, job.job_id)
    assert done.state == tpb.JOB_STATE_SUCCEEDED, done.reason
    assert done.attempt == 1 and done.epoch == 8
    events = await collect(suite.trainer_stub, job.job_id)
    messages = logs(events)
    assert any("killed by SIGKILL" in m and "retrying" in m for m in messages)
    assert any("resumed at epoch" in m for m in messages)
    # One number for the attempt everywhere: GetJob, the StateChanges, the log.
    states, named = attempts_seen(events)
    assert states[0] == 0 and states[-1] == 1 and states == sorted(states)
    assert named == {0, 1}


async def test_worker_killed_past_max_retries_fails_with_the_reason(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=long_spec(max_retries=0)))
    await wait_for_epoch(suite.trainer_stub, job.job_id)
    os.kill(worker_pid(suite.job_dir(job.job_id)), signal.SIGKILL)
    done = await wait_job(suite.trainer_stub, job.job_id)
    assert done.state == tpb.JOB_STATE_FAILED
    assert "SIGKILL" in done.reason


async def test_max_runtime_fails_the_job(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=long_spec(max_runtime_seconds=3)))
    done = await wait_job(suite.trainer_stub, job.job_id, timeout=60)
    assert done.state == tpb.JOB_STATE_FAILED and "max run time" in done.reason


async def test_registry_down_at_hand_off(tmp_path: Path, held_port: int) -> None:
    port = held_port  # the registry binds it later
    settings = trainer_settings(tmp_path / "trainer", f"127.0.0.1:{port}")
    trainer = await start_server(settings, TrainerApp(settings))
    registry = None
    try:
        async with grpc.aio.insecure_channel(trainer.address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            spec = digits_spec(epochs=2, register_as="late")
            job = await stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
            waiting = await wait_job(stub, job.job_id, until=lambda j: j.phase == "registering")
            await asyncio.sleep(2)  # it keeps retrying, and does not fail
            still = await stub.GetJob(tpb.GetJobRequest(job_id=job.job_id))
            assert still.state == tpb.JOB_STATE_RUNNING and waiting.phase == "registering"
            rs = registry_settings(
                f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "artifacts", port=port, auto_migrate=True
            )
            registry = await start_server(rs, RegistryApp(rs))
            done = await wait_job(stub, job.job_id, timeout=90)
            assert done.state == tpb.JOB_STATE_SUCCEEDED, done.reason
            assert done.registered_version == 1
            async with grpc.aio.insecure_channel(registry.address) as rch:
                from maas.v1 import registry_pb2_grpc

                rstub = registry_pb2_grpc.RegistryServiceStub(rch)
                version = await rstub.GetVersion(rpb.GetVersionRequest(model="late", version=1))
                assert version.status == rpb.VERSION_STATUS_READY
                # Metrics logged while the registry was away arrive too.
                run = await rstub.GetRun(rpb.GetRunRequest(run_id=version.run_id))
                assert run.metrics["val_accuracy"] == pytest.approx(done.metrics["val_accuracy"])
    finally:
        await trainer.stop(1)
        if registry is not None:
            await registry.stop(0)


def _start_trainer(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """The trainer as a process, and the address it printed (with port 0, the port it got)."""
    log = Path(env["MAAS_TRAINER_DATA_DIR"]).parent / f"trainer-{time.time_ns()}.log"
    service = start_service("maas.trainer", env, log)
    return service.proc, service.address


async def _wait_serving(address: str, proc: subprocess.Popen[str]) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for _ in range(300):
        assert proc.poll() is None, "trainer exited"
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("trainer did not start")


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_trainer_restart_resumes_running_jobs(sqlite_registry, tmp_path: Path, how: int) -> None:
    env = {
        "MAAS_TRAINER_PORT": "0",
        "MAAS_TRAINER_METRICS_PORT": "0",
        "MAAS_TRAINER_DATA_DIR": str(tmp_path / "trainer"),
        "MAAS_TRAINER_REGISTRY_ADDRESS": sqlite_registry.address,
        "MAAS_TRAINER_DEFAULT_THREADS": "1",
        "MAAS_TRAINER_POLL_INTERVAL": "0.2",
        "MAAS_TRAINER_GRACE_SECONDS": "2",
    }
    proc, address = _start_trainer(env)
    env["MAAS_TRAINER_PORT"] = address.rpartition(":")[2]  # the restarted trainer comes back on it
    try:
        await _wait_serving(address, proc)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            job = await stub.SubmitJob(tpb.SubmitJobRequest(spec=long_spec(epochs=6, register_as="resumed")))
            await wait_for_epoch(stub, job.job_id, 2)
            pid = worker_pid(tmp_path / "trainer" / "jobs" / job.job_id)
        proc.send_signal(how)
        proc.wait(timeout=30)
        for _ in range(100):  # the worker follows its trainer (SIGTERM -> checkpoint -> exit)
            if not alive(pid):
                break
            await asyncio.sleep(0.1)
        assert not alive(pid)
        proc, _ = _start_trainer(env)
        await _wait_serving(address, proc)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            done = await wait_job(stub, job.job_id)
            assert done.state == tpb.JOB_STATE_SUCCEEDED, done.reason
            assert done.epoch == 6 and done.registered_version == 1
            events = await collect(stub, job.job_id)
            assert any("resumed at epoch" in m for m in logs(events))
            # A worker lost with a crashed trainer is a new attempt; a clean stop and resume is not.
            lost = 1 if how == signal.SIGKILL else 0
            states, named = attempts_seen(events)
            assert done.attempt == lost and states[-1] == lost and named == set(range(lost + 1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
async def test_ddp_world_size_two(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(
        tpb.SubmitJobRequest(spec=digits_spec(epochs=3, world_size=2, register_as="ddp"))
    )
    done = await wait_job(suite.trainer_stub, job.job_id, timeout=240)
    assert done.state == tpb.JOB_STATE_SUCCEEDED, done.reason
    assert done.metrics["val_accuracy"] >= 0.85
    messages = logs(await collect(suite.trainer_stub, job.job_id))
    assert any("world size 2" in m for m in messages)


@pytest.mark.slow
async def test_ddp_rank_crash_recovers_through_torchrun_restart(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=long_spec(epochs=5, world_size=2)))
    await wait_for_epoch(suite.trainer_stub, job.job_id, 1)
    os.kill(worker_pid(suite.job_dir(job.job_id), rank=1), signal.SIGKILL)
    done = await wait_job(suite.trainer_stub, job.job_id, timeout=300)
    assert done.state == tpb.JOB_STATE_SUCCEEDED, done.reason
    messages = logs(await collect(suite.trainer_stub, job.job_id))
    assert any("torchrun restart 1" in m for m in messages)


@pytest.mark.slow
async def test_cancel_a_ddp_job_leaves_no_process(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=long_spec(world_size=2)))
    await wait_for_epoch(suite.trainer_stub, job.job_id, 1)
    pids = [worker_pid(suite.job_dir(job.job_id), r) for r in (0, 1)]
    await suite.trainer_stub.CancelJob(tpb.CancelJobRequest(job_id=job.job_id))
    done = await wait_job(suite.trainer_stub, job.job_id, timeout=20)
    assert done.state == tpb.JOB_STATE_CANCELLED
    assert not any(alive(p) for p in pids)
