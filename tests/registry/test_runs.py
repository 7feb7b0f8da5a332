"""Runs: params, batched metrics, finishing, paged metric history, links from versions."""

from __future__ import annotations

import math

import grpc

from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb
from tests.helpers import raises_code, version_request


def series(key: str, points: list[tuple[int, int, float]]) -> pb.MetricSeries:
    """Column-wise series from (step, timestamp_ms, value) points."""
    return pb.MetricSeries(
        key=key,
        steps=[p[0] for p in points],
        timestamps_ms=[p[1] for p in points],
        values=[p[2] for p in points],
    )


async def history_pages(stub, run_id: str, key: str, page_size: int, **kwargs) -> list[tuple[int, int, float]]:
    """Every point, following next_page_token; also checks that no page is over-long."""
    out: list[tuple[int, int, float]] = []
    token = ""
    while True:
        resp = await stub.GetMetricHistory(
            pb.GetMetricHistoryRequest(
                run_id=run_id, key=key, page=common_pb2.PageRequest(page_size=page_size, page_token=token), **kwargs
            )
        )
        s = resp.series
        assert s.key == key
        assert len(s.steps) == len(s.values) == len(s.timestamps_ms) <= page_size
        out.extend(zip(s.steps, s.timestamps_ms, s.values, strict=True))
        token = resp.next_page_token
        if not token:
            return out


async def test_create_get_and_list(stub) -> None:
    run = await stub.CreateRun(pb.CreateRunRequest(name="lenet", job_id="job-1", params={"lr": "0.01"}))
    assert len(run.run_id) == 32
    assert run.name == "lenet" and run.job_id == "job-1" and run.status == pb.RUN_STATUS_RUNNING
    assert dict(run.params) == {"lr": "0.01"} and dict(run.metrics) == {}
    assert run.started_at.seconds > 0 and not run.HasField("finished_at")
    assert await stub.GetRun(pb.GetRunRequest(run_id=run.run_id)) == run

    unlinked = await stub.CreateRun(pb.CreateRunRequest())
    assert unlinked.job_id == "" and unlinked.run_id != run.run_id
    other = await stub.CreateRun(pb.CreateRunRequest(job_id="job-1"))

    by_job = await stub.ListRuns(pb.ListRunsRequest(job_id="job-1"))
    assert [r.run_id for r in by_job.runs] == [other.run_id, run.run_id]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListRuns(pb.ListRunsRequest(page=common_pb2.PageRequest(page_size=1, page_token=token)))
        seen.extend(r.run_id for r in page.runs)
        token = page.next_page_token
        if not token:
            break
    assert seen == [other.run_id, unlinked.run_id, run.run_id]


async def test_unknown_and_malformed_run_ids(stub) -> None:
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetRun(pb.GetRunRequest(run_id="0" * 32))
    for bad in ["", "../x", "0" * 31, "Z" * 32]:
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.GetRun(pb.GetRunRequest(run_id=bad))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.CreateRun(pb.CreateRunRequest(job_id="../job"))


async def test_params_are_write_once(stub) -> None:
    run = await stub.CreateRun(pb.CreateRunRequest(params={"lr": "0.01"}))
    await stub.LogParams(pb.LogParamsRequest(run_id=run.run_id, params={"epochs": "3", "batch": "64"}))
    # The same value again is fine (a retried call changes nothing).
    await stub.LogParams(pb.LogParamsRequest(run_id=run.run_id, params={"lr": "0.01"}))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.LogParams(pb.LogParamsRequest(run_id=run.run_id, params={"lr": "0.1", "new": "x"}))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.LogParams(pb.LogParamsRequest(run_id=run.run_id, params={"../k": "x"}))
    got = await stub.GetRun(pb.GetRunRequest(run_id=run.run_id))
    # The refused call wrote nothing, not even its valid key.
    assert dict(got.params) == {"lr": "0.01", "epochs": "3", "batch": "64"}


async def test_log_metrics_in_batches(stub) -> None:
    run = await stub.CreateRun(pb.CreateRunRequest())
    first = await stub.LogMetrics(
        pb.LogMetricsRequest(
            run_id=run.run_id,
            series=[
                series("loss", [(0, 1000, 2.0), (1, 1001, 1.5), (2, 1002, 1.0)]),
                series("val_accuracy", [(2, 1002, 0.5)]),
            ],
        )
    )
    assert first.points_written == 4
    second = await stub.LogMetrics(
        pb.LogMetricsRequest(
            run_id=run.run_id,
            # Out of order within a batch; the latest value is that of the highest step.
            series=[series("loss", [(4, 1004, 0.4), (3, 1003, 0.7)]), series("val_accuracy", [(4, 1004, 0.8)])],
        )
    )
    assert second.points_written == 3
    # A late point for an older step does not replace the latest value.
    await stub.LogMetrics(pb.LogMetricsRequest(run_id=run.run_id, series=[series("loss", [(1, 2000, 9.9)])]))
    # Without timestamps the server stamps the points.
    await stub.LogMetrics(
        pb.LogMetricsRequest(run_id=run.run_id, series=[pb.MetricSeries(key="lr", steps=[0, 1], values=[0.1, 0.05])])
    )
    got = await stub.GetRun(pb.GetRunRequest(run_id=run.run_id))
    assert dict(got.metrics) == {"loss": 0.4, "val_accuracy": 0.8, "lr": 0.05}

    loss = await history_pages(stub, run.run_id, "loss", 100)
    assert loss == [(0, 1000, 2.0), (1, 1001, 1.5), (1, 2000, 9.9), (2, 1002, 1.0), (3, 1003, 0.7), (4, 1004, 0.4)]
    lr = await history_pages(stub, run.run_id, "lr", 100)
    assert [(s, v) for s, _, v in lr] == [(0, 0.1), (1, 0.05)]
    assert all(t >= got.started_at.seconds * 1000 for _, t, _ in lr)
    assert await history_pages(stub, run.run_id, "absent", 100) == []


async def test_an_empty_series_beside_others(stub) -> None:
    run = await stub.CreateRun(pb.CreateRunRequest())
    resp = await stub.LogMetrics(
        pb.LogMetricsRequest(run_id=run.run_id, series=[pb.MetricSeries(key="empty"), series("loss", [(0, 1, 2.0)])])
    )
    assert resp.points_written == 1
    assert dict((await stub.GetRun(pb.GetRunRequest(run_id=run.run_id))).metrics) == {"loss": 2.0}
    assert await history_pages(stub, run.run_id, "empty", 10) == []


async def test_malformed_series_write_nothing(stub) -> None:
    run = await stub.CreateRun(pb.CreateRunRequest())
    bad = [
        pb.MetricSeries(key="loss", steps=[0, 1], values=[1.0]),
        pb.MetricSeries(key="loss", steps=[0], values=[1.0], timestamps_ms=[1, 2]),
        pb.MetricSeries(key="loss", steps=[0], values=[math.nan]),
        pb.MetricSeries(key="loss", steps=[0], values=[math.inf]),
        pb.MetricSeries(key="../loss", steps=[0], values=[1.0]),
        pb.MetricSeries(key="", steps=[0], values=[1.0]),
    ]
    for s in bad:
        good = series("ok", [(0, 1, 1.0)])
        async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
            await stub.LogMetrics(pb.LogMetricsRequest(run_id=run.run_id, series=[good, s]))
    assert dict((await stub.GetRun(pb.GetRunRequest(run_id=run.run_id))).metrics) == {}
    assert await history_pages(stub, run.run_id, "ok", 10) == []
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.LogMetrics(pb.LogMetricsRequest(run_id="0" * 32, series=[series("ok", [(0, 1, 1.0)])]))


async def test_finish_and_no_logging_after(stub) -> None:
    run = await stub.CreateRun(pb.CreateRunRequest())
    await stub.LogMetrics(pb.LogMetricsRequest(run_id=run.run_id, series=[series("loss", [(0, 1, 1.0)])]))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.FinishRun(pb.FinishRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_RUNNING))
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.FinishRun(pb.FinishRunRequest(run_id=run.run_id))

    finished = await stub.FinishRun(pb.FinishRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_FINISHED))
    assert finished.status == pb.RUN_STATUS_FINISHED and finished.finished_at.seconds > 0
    # The same final status again is a no-op; another one is refused.
    again = await stub.FinishRun(pb.FinishRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_FINISHED))
    assert again.finished_at == finished.finished_at
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await stub.FinishRun(pb.FinishRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_FAILED))

    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await stub.LogMetrics(pb.LogMetricsRequest(run_id=run.run_id, series=[series("loss", [(1, 2, 0.5)])]))
    async with raises_code(grpc.StatusCode.FAILED_PRECONDITION):
        await stub.LogParams(pb.LogParamsRequest(run_id=run.run_id, params={"late": "1"}))
    got = await stub.GetRun(pb.GetRunRequest(run_id=run.run_id))
    assert dict(got.metrics) == {"loss": 1.0} and dict(got.params) == {}
    assert got.status == pb.RUN_STATUS_FINISHED

    for status in (pb.RUN_STATUS_FAILED, pb.RUN_STATUS_KILLED):
        other = await stub.CreateRun(pb.CreateRunRequest())
        assert (await stub.FinishRun(pb.FinishRunRequest(run_id=other.run_id, status=status))).status == status


async def test_history_pages_concatenate_to_the_full_history(stub) -> None:
    run = await stub.CreateRun(pb.CreateRunRequest())
    points: list[tuple[int, int, float]] = []
    for step in range(40):
        points.append((step, 10_000 + step, float(step)))
        if step % 3 == 0:  # a step logged again later (a resumed run)
            points.append((step, 50_000 + step, step + 0.5))
        if step % 5 == 0:  # exact duplicates of step and timestamp
            points.extend([(step, 90_000, step + 0.25), (step, 90_000, step + 0.75), (step, 90_000, step + 0.75)])
    # Sent in several batches and out of order.
    shuffled = points[::2] + points[1::2]
    for start in range(0, len(shuffled), 17):
        await stub.LogMetrics(
            pb.LogMetricsRequest(run_id=run.run_id, series=[series("loss", shuffled[start : start + 17])])
        )
    expected = sorted(points)
    for size in (1, 2, 3, 7, 50, 1000):
        assert await history_pages(stub, run.run_id, "loss", size) == expected, size


async def test_history_step_range(stub) -> None:
    run = await stub.CreateRun(pb.CreateRunRequest())
    points = [(step, 1000 + step, step / 10) for step in range(100)] + [(15, 5000, 99.0)]
    await stub.LogMetrics(pb.LogMetricsRequest(run_id=run.run_id, series=[series("loss", points)]))
    expected = sorted(p for p in points if 10 <= p[0] <= 20)
    assert await history_pages(stub, run.run_id, "loss", 4, min_step=10, max_step=20) == expected
    assert await history_pages(stub, run.run_id, "loss", 1000, min_step=0, max_step=4) == sorted(points)[:5]
    # Only a lower bound: every step from there on.
    assert await history_pages(stub, run.run_id, "loss", 1000, min_step=95) == sorted(points)[-5:]
    assert await history_pages(stub, run.run_id, "loss", 1000, min_step=30, max_step=30) == [(30, 1030, 3.0)]
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run.run_id, key="loss", min_step=5, max_step=4))
    # A token is only good for the range it was issued for.
    first = await stub.GetMetricHistory(
        pb.GetMetricHistoryRequest(
            run_id=run.run_id, key="loss", min_step=10, max_step=20, page=common_pb2.PageRequest(page_size=2)
        )
    )
    async with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        await stub.GetMetricHistory(
            pb.GetMetricHistoryRequest(
                run_id=run.run_id, key="loss", page=common_pb2.PageRequest(page_token=first.next_page_token)
            )
        )
    async with raises_code(grpc.StatusCode.NOT_FOUND):
        await stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id="0" * 32, key="loss"))


async def test_version_links_to_its_run_and_its_final_metrics(stub) -> None:
    await stub.CreateModel(pb.CreateModelRequest(name="m"))
    run = await stub.CreateRun(pb.CreateRunRequest(job_id="job-7"))
    await stub.LogMetrics(
        pb.LogMetricsRequest(
            run_id=run.run_id,
            series=[series("val_accuracy", [(0, 1, 0.5), (1, 2, 0.75)]), series("loss", [(1, 2, 0.3)])],
        )
    )
    await stub.FinishRun(pb.FinishRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_FINISHED))

    inherited = await stub.CreateVersion(version_request("m", run_id=run.run_id))
    assert inherited.run_id == run.run_id
    assert dict(inherited.metrics) == {"val_accuracy": 0.75, "loss": 0.3}
    fetched = await stub.GetVersion(pb.GetVersionRequest(model="m", version=inherited.version))
    assert fetched.run_id == run.run_id and dict(fetched.metrics) == {"val_accuracy": 0.75, "loss": 0.3}

    # Metrics given with the version win over the run's.
    explicit = await stub.CreateVersion(version_request("m", run_id=run.run_id, metrics={"val_accuracy": 0.9}))
    assert dict(explicit.metrics) == {"val_accuracy": 0.9}
    assert (await stub.GetVersion(pb.GetVersionRequest(model="m", version=explicit.version))).run_id == run.run_id

    unlinked = await stub.CreateVersion(version_request("m"))
    assert unlinked.run_id == "" and dict(unlinked.metrics) == {}
