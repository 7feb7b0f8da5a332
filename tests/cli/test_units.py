"""Pieces of the CLI and client that need no server: specs, inputs, tensors, charts, the progress view."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maas.cli import charts, inputs, versions
from maas.cli.main import build_parser
from maas.cli.output import to_dict
from maas.cli.progress import JobProgress, ProgressView
from maas.cli.train import spec_document
from maas.client import tensors
from maas.client.config import Endpoints
from maas.client.runner import LoopThread
from maas.client.specs import job_spec, merge
from maas.common import errors
from maas.v1 import registry_pb2 as rpb
from maas.v1 import trainer_pb2 as tpb


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_flags_and_spec_file_make_one_spec(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(
        "model: {name: lenet, args: {hidden: [64]}}\n"
        "dataset: {name: digits}\n"
        "epochs: 5\n"
        "optimizer: {name: adam, lr: 0.001}\n"
        "promotion: {alias: staging, metric: val_loss}\n"
    )
    args = parse(
        "train", "-f", str(spec_file), "--model", "mlp", "--model-arg", "hidden=[256, 128]", "--epochs", "20",
        "--register-as", "digits", "--promote", "production", "--tag", "team=ml", "--lr", "0.1",
    )  # fmt: skip
    spec = job_spec(spec_document(args))
    assert spec.model.name == "mlp"
    assert list(spec.model.args["hidden"]) == [256, 128]
    assert spec.epochs == 20
    assert spec.optimizer.name == "adam" and spec.optimizer.lr == pytest.approx(0.1)
    assert spec.promotion.alias == "production" and spec.promotion.metric == "val_loss"
    assert spec.register_as == "digits"
    assert dict(spec.tags) == {"team": "ml"}


def test_spec_documents_accept_json_names_and_refuse_unknown_fields() -> None:
    assert job_spec({"registerAs": "x", "batch_size": 8}).register_as == "x"
    with pytest.raises(errors.InvalidArgument):
        job_spec({"epochs": "many"})
    with pytest.raises(errors.InvalidArgument):
        job_spec({"no_such_field": 1})
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}, "d": 1}


def test_connection_options_come_from_flags_then_environment(tmp_path: Path) -> None:
    env = {"MAAS_REGISTRY_ADDRESS": "reg:1", "MAAS_TOKEN": "t0k", "MAAS_TIMEOUT": "3"}
    ends = Endpoints.from_env(env, trainer="tr:2")
    assert (ends.registry, ends.trainer, ends.inference) == ("reg:1", "tr:2", "127.0.0.1:8001")
    config = ends.channel("registry")
    assert config.target == "reg:1" and config.timeout == 3.0 and config.token == "t0k" and not config.tls
    assert dict(config.metadata()) == {"authorization": "Bearer t0k"}
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    tls = Endpoints.from_env({"MAAS_TLS_CA": str(ca)}).channel("inference")
    assert tls.tls and tls.root_certificates == ca.read_bytes()
    with pytest.raises(errors.InvalidArgument):
        Endpoints.from_env({"MAAS_TLS_CERT": str(ca)}).channel("trainer")
    with pytest.raises(errors.InvalidArgument):
        Endpoints.from_env({"MAAS_TIMEOUT": "soon"})


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64", "UINT8", "BOOL", "FP16", "INT32"])
def test_raw_tensors_round_trip(datatype: str) -> None:
    array = tensors.as_datatype(np.arange(24).reshape(2, 3, 4) % 5, datatype)
    raw = tensors.to_raw(array, datatype)
    assert len(raw) == array.size * array.dtype.itemsize
    back = tensors.from_raw(datatype, [2, 3, 4], raw)
    assert back.dtype == array.dtype and np.array_equal(back, array)
    assert tensors.datatype_of(array) == datatype


def test_bytes_tensors_round_trip() -> None:
    array = np.array([b"a", b"", "\u00e9".encode()], dtype=object)
    raw = tensors.to_raw(array, "BYTES")
    assert list(tensors.from_raw("BYTES", [3], raw)) == list(array)
    with pytest.raises(errors.InvalidArgument):
        tensors.from_raw("FP32", [2], b"\x00" * 7)


def test_inputs_from_npy_json_and_images(tmp_path: Path) -> None:
    shape = [-1, 1, 8, 8]
    np.save(tmp_path / "one.npy", np.ones((1, 8, 8), np.float32))
    assert inputs.load(tmp_path / "one.npy", shape).shape == (1, 1, 8, 8)
    (tmp_path / "batch.json").write_text(json.dumps({"data": list(range(128)), "shape": [2, 1, 8, 8]}))
    assert inputs.load(tmp_path / "batch.json", shape).shape == (2, 1, 8, 8)
    (tmp_path / "bad.json").write_text(json.dumps([[1, 2], [3]]))
    with pytest.raises(errors.InvalidArgument):
        inputs.load(tmp_path / "bad.json", shape)
    with pytest.raises(errors.InvalidArgument):
        inputs.load(tmp_path / "one.npy", [-1, 3, 8, 8])

    img = np.zeros((32, 32), np.uint8)
    img[:, 16:] = 255
    Image.fromarray(img).save(tmp_path / "half.png")
    pixels = inputs.load(tmp_path / "half.png", shape, pixel_max=16.0)
    assert pixels.shape == (1, 1, 8, 8)
    assert pixels[0, 0, :, 0].max() == 0 and pixels[0, 0, :, -1].min() == pytest.approx(16.0)
    inverted = inputs.load(tmp_path / "half.png", shape, pixel_max=16.0, invert=True)
    assert inverted[0, 0, :, 0].min() == pytest.approx(16.0)
    rgb = inputs.load(tmp_path / "half.png", [-1, 3, 32, 32])
    assert rgb.shape == (1, 3, 32, 32) and rgb.max() == 255.0
    pickled = tmp_path / "object.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(errors.InvalidArgument):
        inputs.load(pickled, shape)


def test_top_k_ranks_by_probability() -> None:
    ranked = inputs.top_k(np.array([[0.0, 3.0, 1.0]]), ["a", "b", "c"], 2)
    assert [r["label"] for r in ranked[0]] == ["b", "c"]
    assert sum(inputs.softmax(np.array([[0.0, 3.0, 1.0]]))[0]) == pytest.approx(1.0)


def test_text_chart_spans_the_range() -> None:
    lines = charts.text_chart([1, 2, 3, 4], [0.5, 0.9, 0.7, 1.0], width=20, height=5, title="acc")
    assert lines[0] == "acc" and len(lines) == 1 + 5 + 2
    assert lines[1].strip().startswith("1") and lines[5].strip().startswith("0.5")
    assert lines[-1].split() == ["1", "4"]
    ascii_lines = charts.text_chart([1, 2], [1.0, 1.0], width=10, height=3, unicode=False)
    assert any("*" in line for line in ascii_lines)
    assert charts.text_chart([], [], title="x") == ["x: no points"]


def test_progress_view_tracks_the_job() -> None:
    progress = JobProgress("job1", "mlp on digits")
    events = [
        tpb.JobEvent(seq=1, state=tpb.StateChange(state=tpb.JOB_STATE_RUNNING, phase="training", attempt=1)),
        tpb.JobEvent(seq=2, step=tpb.StepProgress(epoch=1, step=5, steps_per_epoch=10, loss=0.5,
                                                   samples_per_second=1200, eta_seconds=75)),
        tpb.JobEvent(seq=3, epoch=tpb.EpochResult(epoch=1, epochs=4, metrics={"val_accuracy": 0.8, "val_loss": 0.6})),
        tpb.JobEvent(seq=4, epoch=tpb.EpochResult(epoch=2, epochs=4, metrics={"val_accuracy": 0.7})),
    ]  # fmt: skip
    progress.apply(events[0])
    progress.apply(events[1])
    head, epoch_line, step_line = progress.lines(100)
    assert "RUNNING" in head and "training" in head
    assert "1:15" in epoch_line  # ETA
    assert "5/10" in step_line and "0.5000" in step_line and "1,200 samples/s" in step_line
    for event in events[2:]:
        progress.apply(event)
    assert progress.best == (0.8, 1) and progress.last_seq == 4
    assert "2/4" in progress.lines(100)[1]

    out = io.StringIO()
    view = ProgressView("job1", stream=out, live=True)
    for event in events:
        view.on_event(event)
    view.close()
    assert "\x1b[" in out.getvalue()  # redrawn in place on a terminal
    plain = io.StringIO()
    view = ProgressView("job1", stream=plain, live=False)
    for event in events:
        view.on_event(event)
    assert "\x1b[" not in plain.getvalue()
    assert [ln.split()[1] for ln in plain.getvalue().splitlines() if ln.startswith("epoch ")] == ["1/4", "2/4"]


def test_losses_and_errors_are_best_lowest_and_the_rest_highest() -> None:
    for name in ("val_loss", "train_loss", "Val_Loss", "error_rate", "val_mse", "mae", "rmse", "perplexity"):
        assert versions.lower_is_better(name), name
    for name in ("val_accuracy", "train_accuracy", "f1", "auc"):
        assert not versions.lower_is_better(name), name


def test_json_output_keeps_integers_and_defaults() -> None:
    version = rpb.ModelVersion(model="m", version=3, size_bytes=2**40)
    version.architecture.update({"input_shape": [1, 8, 8], "normalize": {"mean": [0.5]}})
    doc = to_dict(version)
    assert doc["version"] == 3 and doc["size_bytes"] == 2**40
    assert doc["archived"] is False
    assert doc["architecture"]["input_shape"] == [1, 8, 8]
    model = rpb.Model(name="m", aliases={"production": 3})
    assert to_dict(model)["aliases"] == {"production": 3}


def test_stopping_the_client_loop_leaves_no_task_pending() -> None:
    # After Ctrl-C a cancelled gRPC call may leave a task of its own waiting on the
    # client loop; stopping the loop must settle it, or Python prints "Task was
    # destroyed but it is pending" after the command's one-line message.
    runner = LoopThread()
    started = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), runner.loop)
    started.result(timeout=5)

    async def leave_one() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(asyncio.Event().wait())

    left = runner.run(leave_one())
    assert not left.done()
    runner.stop()
    assert left.cancelled()
    assert runner.loop.is_closed()
