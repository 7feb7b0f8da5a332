"""Training jobs end to end through gRPC: train, register, promote, watch."""

from __future__ import annotations

import asyncio
import itertools

import grpc
import pytest

from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as rpb
from maas.v1 import trainer_pb2 as tpb
from tests.helpers import raises_code
from tests.trainer.conftest import collect, digits_spec, logs, wait_job, write_cifar10


async def test_digits_mlp_trains_registers_and_promotes(suite) -> None:
    spec = digits_spec(
        register_as="digits",
        promotion=tpb.PromotionRule(alias="production", metric="val_accuracy", threshold=0.9),
    )
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
    assert job.state == tpb.JOB_STATE_QUEUED
    job = await wait_job(suite.trainer_stub, job.job_id)
    assert job.state == tpb.JOB_STATE_SUCCEEDED, job.reason
    assert job.metrics["val_accuracy"] >= 0.9
    assert job.epoch == 8 and job.registered_model == "digits" and job.registered_version == 1
    assert job.promoted_alias == "production"

    version = await suite.registry_stub.ResolveVersion(rpb.ResolveVersionRequest(ref="digits@production"))
    assert version.status == rpb.VERSION_STATUS_READY and version.version == 1
    assert version.format == rpb.MODEL_FORMAT_SAFETENSORS
    assert version.architecture["name"] == "mlp"
    assert version.signature.inputs[0].shape == [-1, 1, 8, 8]
    assert version.signature.inputs[0].datatype == common_pb2.DATA_TYPE_FP32
    assert version.metrics["val_accuracy"] == pytest.approx(job.metrics["val_accuracy"])
    # The exported model carries its input normalization (clients send raw 0-16 pixels).
    assert len(version.architecture["normalize"]["mean"]) == 1

    run = await suite.registry_stub.GetRun(rpb.GetRunRequest(run_id=version.run_id))
    assert run.status == rpb.RUN_STATUS_FINISHED and run.job_id == job.job_id
    assert run.params["optimizer.name"] == "sgd" and run.params["epochs"] == "8"
    history = await suite.registry_stub.GetMetricHistory(
        rpb.GetMetricHistoryRequest(run_id=run.run_id, key="val_accuracy")
    )
    assert list(history.series.steps) == list(range(1, 9))
    losses = await suite.registry_stub.GetMetricHistory(rpb.GetMetricHistoryRequest(run_id=run.run_id, key="loss"))
    assert len(losses.series.steps) >= 8  # per-step loss, sampled, in batches

    events = await collect(suite.trainer_stub, job.job_id)
    kinds = {e.WhichOneof("kind") for e in events}
    assert kinds == {"state", "step", "epoch", "log"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state.state == tpb.JOB_STATE_SUCCEEDED
    epochs = [e.epoch for e in events if e.WhichOneof("kind") == "epoch"]
    assert [e.epoch for e in epochs] == list(range(1, 9))
    assert all(e.samples_per_second > 0 for e in epochs)


async def test_idempotency_key_returns_the_same_job(suite) -> None:
    req = tpb.SubmitJobRequest(spec=digits_spec(epochs=1), idempotency_key="nightly-2026-11-28")
    first = await suite.trainer_stub.SubmitJob(req)
    second = await suite.trainer_stub.SubmitJob(req)
    assert first.job_id == second.job_id
    other = tpb.SubmitJobRequest(spec=digits_spec(epochs=2), idempotency_key="nightly-2026-11-28")
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await suite.trainer_stub.SubmitJob(other)
    listed = await suite.trainer_stub.ListJobs(tpb.ListJobsRequest())
    assert [j.job_id for j in listed.jobs] == [first.job_id]
    await wait_job(suite.trainer_stub, first.job_id)


async def test_same_spec_and_seed_give_identical_metrics(suite) -> None:
    spec = digits_spec(epochs=3, seed=11, threads=1)
    a = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
    b = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
    a = await wait_job(suite.trainer_stub, a.job_id)
    b = await wait_job(suite.trainer_stub, b.job_id)
    assert a.state == b.state == tpb.JOB_STATE_SUCCEEDED
    assert dict(a.metrics) == dict(b.metrics)


async def test_lenet_on_cifar10_files_through_torchvision(suite) -> None:
    write_cifar10(suite.data_root / "cifar10")
    spec = tpb.JobSpec(
        model=tpb.ModelSpec(name="lenet"),
        dataset=tpb.DatasetSpec(name="cifar10"),
        epochs=2,
        batch_size=16,
        register_as="cifar",
    )
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
    job = await wait_job(suite.trainer_stub, job.job_id)
    assert job.state == tpb.JOB_STATE_SUCCEEDED, job.reason
    # torchvision's test split is evaluated too.
    assert "test_accuracy" in job.metrics
    version = await suite.registry_stub.GetVersion(rpb.GetVersionRequest(model="cifar", version=1))
    assert version.architecture["name"] == "lenet"
    assert version.architecture["args"] == {"in_channels": 3, "num_classes": 10, "padding": 0}
    assert version.architecture["labels"][0] == "airplane"
    assert version.signature.inputs[0].shape == [-1, 3, 32, 32]
    assert len(version.architecture["normalize"]["mean"]) == 3


async def test_missing_dataset_fails_with_reason(suite) -> None:
    spec = tpb.JobSpec(model=tpb.ModelSpec(name="lenet"), dataset=tpb.DatasetSpec(name="mnist"), epochs=1)
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
    job = await wait_job(suite.trainer_stub, job.job_id)
    assert job.state == tpb.JOB_STATE_FAILED
    assert "mnist" in job.reason and job.attempt == 0  # not retried: a retry cannot fix it


@pytest.mark.parametrize("suite", [{"max_concurrent_jobs": 1}], indirect=True)
async def test_queue_is_fifo_under_the_concurrency_limit(suite) -> None:
    ids = []
    for _ in range(3):
        ids.append((await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=digits_spec(epochs=1)))).job_id)
    jobs = [await wait_job(suite.trainer_stub, i) for i in ids]
    assert all(j.state == tpb.JOB_STATE_SUCCEEDED for j in jobs)
    for earlier, later in itertools.pairwise(jobs):
        assert later.started_at.ToMilliseconds() >= earlier.finished_at.ToMilliseconds()


async def test_early_stopping(suite) -> None:
    spec = digits_spec(
        epochs=50,
        optimizer=tpb.OptimizerSpec(name="sgd", lr=1e-6),  # learns nothing: no improvement
        early_stopping=tpb.EarlyStopping(metric="val_accuracy", patience=2, min_delta=0.01),
    )
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
    job = await wait_job(suite.trainer_stub, job.job_id)
    assert job.state == tpb.JOB_STATE_SUCCEEDED
    assert job.epoch == 3
    assert any("early stopping" in m for m in logs(await collect(suite.trainer_stub, job.job_id)))


async def test_watch_resumes_from_a_sequence_number(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=digits_spec(epochs=4)))
    first = await collect(suite.trainer_stub, job.job_id, limit=3)
    rest = await collect(suite.trainer_stub, job.job_id, after_seq=first[-1].seq)
    full = await collect(suite.trainer_stub, job.job_id)
    assert [e.seq for e in first + rest] == [e.seq for e in full]
    assert first + rest == full
    tail = await collect(suite.trainer_stub, job.job_id, after_seq=full[-1].seq)
    assert tail == []  # the job ended: nothing more, and the stream closes


async def test_list_and_get(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=digits_spec(epochs=1)))
    await wait_job(suite.trainer_stub, job.job_id)
    done = await suite.trainer_stub.ListJobs(tpb.ListJobsRequest(states=[tpb.JOB_STATE_SUCCEEDED]))
    assert [j.job_id for j in done.jobs] == [job.job_id]
    assert done.jobs[0].spec.optimizer.momentum == pytest.approx(0.9)  # defaults are filled in
    queued = await suite.trainer_stub.ListJobs(tpb.ListJobsRequest(states=[tpb.JOB_STATE_QUEUED]))
    assert list(queued.jobs) == []
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await suite.trainer_stub.GetJob(tpb.GetJobRequest(job_id="0" * 16))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await suite.trainer_stub.GetJob(tpb.GetJobRequest(job_id="../etc"))


def _bad_specs() -> list[tuple[str, tpb.JobSpec]]:
    cases = [
        ("model.name", tpb.JobSpec(model=tpb.ModelSpec(name="os.system"), dataset=tpb.DatasetSpec(name="digits"))),
        (
            "model.name",
            tpb.JobSpec(model=tpb.ModelSpec(name="torch.nn.Linear"), dataset=tpb.DatasetSpec(name="digits")),
        ),
        ("dataset.name", tpb.JobSpec(model=tpb.ModelSpec(name="mlp"), dataset=tpb.DatasetSpec(name="http://x/y"))),
        ("epochs", digits_spec(epochs=100_000)),
        ("batch_size", digits_spec(batch_size=-1)),
        ("optimizer.lr", digits_spec(optimizer=tpb.OptimizerSpec(name="sgd", lr=-1))),
        ("optimizer.name", digits_spec(optimizer=tpb.OptimizerSpec(name="__import__('os')"))),
        ("world_size", digits_spec(world_size=1000)),
        ("validation_split", digits_spec(validation_split=0.9)),
        ("register_as", digits_spec(register_as="../../etc")),
        ("promotion.alias", digits_spec(register_as="d", promotion=tpb.PromotionRule(alias="Prod;rm -rf /"))),
        ("promotion", digits_spec(promotion=tpb.PromotionRule(alias="production"))),
        ("schedule.name", digits_spec(schedule=tpb.ScheduleSpec(name="exec"))),
        ("early_stopping.metric", digits_spec(early_stopping=tpb.EarlyStopping(metric="$(reboot)"))),
    ]
    extra_arg = digits_spec()
    extra_arg.model.args.update({"__class__": "subprocess.Popen"})
    cases.append(("model.args", extra_arg))
    classes = digits_spec()
    classes.model.args.update({"num_classes": 3})
    cases.append(("model.args.num_classes", classes))
    for path in ["../outside", "/etc", "a/../../b", "%2e%2e%2f", "..\\windows", "file:///etc", "x\x00y"]:
        cases.append(
            (
                "dataset.path",
                tpb.JobSpec(model=tpb.ModelSpec(name="mlp"), dataset=tpb.DatasetSpec(name="imagefolder", path=path)),
            )
        )
    return cases


@pytest.mark.parametrize("suite", [{"warm_workers": 0}], indirect=True)
async def test_bad_specs_are_invalid_argument_naming_the_field(suite) -> None:
    for field, spec in _bad_specs():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
            f"{field}: {info.value.code()} {info.value.details()}"
        )
        assert info.value.details().startswith(field), (field, info.value.details())
    listed = await suite.trainer_stub.ListJobs(tpb.ListJobsRequest())
    assert list(listed.jobs) == []


async def test_concurrent_watchers_see_the_same_events(suite) -> None:
    job = await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=digits_spec(epochs=2)))
    a, b = await asyncio.gather(collect(suite.trainer_stub, job.job_id), collect(suite.trainer_stub, job.job_id))
    assert a == b and a[-1].state.state == tpb.JOB_STATE_SUCCEEDED


@pytest.mark.parametrize("suite", [{"warm_workers": 0}], indirect=True)
async def test_thousands_of_unknown_model_args_are_invalid_argument_with_a_short_message(suite) -> None:
    for count in (2_000, 200_000):
        model, dataset = digits_spec(), digits_spec()
        model.model.args.update({f"unknown_argument_{i:06d}": i for i in range(count)})
        dataset.dataset.args.update({f"unknown_argument_{i:06d}": i for i in range(count)})
        for spec in (model, dataset):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (count, info.value.code())
            assert len(info.value.details().encode()) <= 2048, count
    listed = await suite.trainer_stub.ListJobs(tpb.ListJobsRequest())
    assert list(listed.jobs) == []


def _non_finite_specs() -> list[tuple[str, tpb.JobSpec]]:
    cases = []
    for value in (float("nan"), float("inf"), float("-inf")):
        for where, args in (
            ("model num_classes", {"num_classes": value}),
            ("model hidden", {"hidden": [16, value]}),
            ("model nested", {"hidden": [16], "extra": {"deep": [[value]]}}),
        ):
            spec = digits_spec()
            spec.model.args.update(args)
            cases.append((f"{where} {value}", spec))
        fake = tpb.JobSpec(model=tpb.ModelSpec(name="lenet"), dataset=tpb.DatasetSpec(name="fake"))
        fake.dataset.args.update({"num_samples": 100, "image_size": value, "num_classes": 4})
        cases.append((f"dataset args {value}", fake))
        for field, spec in (
            ("lr", digits_spec(optimizer=tpb.OptimizerSpec(name="sgd", lr=value))),
            ("momentum", digits_spec(optimizer=tpb.OptimizerSpec(name="sgd", momentum=value))),
            ("gamma", digits_spec(schedule=tpb.ScheduleSpec(name="step", gamma=value))),
            ("validation_split", digits_spec(validation_split=value)),
            ("min_delta", digits_spec(early_stopping=tpb.EarlyStopping(metric="val_loss", min_delta=value))),
            (
                "threshold",
                digits_spec(register_as="d", promotion=tpb.PromotionRule(alias="production", threshold=value)),
            ),
        ):
            cases.append((f"{field} {value}", spec))
    return cases


@pytest.mark.parametrize("suite", [{"warm_workers": 0}], indirect=True)
async def test_non_finite_numbers_in_specs_are_invalid_argument(suite) -> None:
    for case, spec in _non_finite_specs():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await suite.trainer_stub.SubmitJob(tpb.SubmitJobRequest(spec=spec))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
            f"{case}: {info.value.code()} {info.value.details()}"
        )
    listed = await suite.trainer_stub.ListJobs(tpb.ListJobsRequest())
    assert list(listed.jobs) == []
