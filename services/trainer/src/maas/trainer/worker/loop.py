"""The training loop of one job, single process or one rank of a DDP group.

The data set sits in memory as tensors; each epoch draws a permutation from
(seed, epoch), so a resumed or repeated run visits the same batches in the
same order and a job with the same spec and seed ends with the same metrics.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from maas.common import catalog, software
from maas.common.errors import MaasError
from maas.trainer import datasets, jobspec, text_spec
from maas.trainer.worker import checkpoint, finetune, onnx_export, text_job
from maas.trainer.worker.reporter import Reporter

INTERRUPTED = 143  # exit code after a SIGTERM: checkpoint written, resume later
FATAL = 3  # exit code for errors a retry cannot fix (bad data, bad spec)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @staticmethod
    def from_env() -> Dist:
        return Dist(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )


@dataclass
class Position:
    """Where the loop is: what a checkpoint must restore."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # steps of that epoch already done
    global_step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    best: float | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class Stop:
    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum: int, frame: Any) -> None:
            cls.requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _normalization(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of raw training inputs (what clients send)."""
    data = x.double()
    dims = [0, *range(2, data.ndim)]
    mean = data.mean(dim=dims)
    std = data.std(dim=dims).clamp_min(1e-6)
    return [float(m) for m in mean], [float(s) for s in std]


def _optimizer(opt: jobspec.Optimizer, params: Any) -> torch.optim.Optimizer:
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(params, lr=opt.lr, weight_decay=opt.weight_decay)


def _scheduler(sched: jobspec.Schedule, epochs: int, optimizer: torch.optim.Optimizer) -> Any:
    if sched.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=sched.step_size, gamma=sched.gamma)
    if sched.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if sched.name == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=sched.gamma)
    return None


def _epoch_order(indices: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return indices[torch.randperm(len(indices), generator=g)]


def _reduce(values: list[float], dist_: Dist, device: torch.device) -> list[float]:
    if not dist_.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return [float(v) for v in t.tolist()]


Fetch = Callable[[torch.Tensor, torch.device], tuple[torch.Tensor, ...]]


def tensor_rows(x: torch.Tensor) -> Fetch:
    """Rows of one float input: what every network but a text encoder takes."""
    return lambda idx, device: (x[idx].to(device, torch.float32, non_blocking=True),)


def evaluate(
    model: nn.Module,
    fetch: Fetch,
    rows: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch: int,
    dist_: Dist,
) -> tuple[float, float]:
    """(mean loss, accuracy) over this rank's share of `rows` (indices), reduced across ranks."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    share = rows[torch.arange(dist_.rank, len(rows), dist_.world)]
    with torch.inference_mode():
        for start in range(0, len(share), batch):
            idx = share[start : start + batch]
            yb = y[idx].to(device, non_blocking=True)
            logits = model(*fetch(idx, device))
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
            count += len(idx)
    model.train()
    loss_sum, correct_f, count_f = _reduce([loss_sum, float(correct), float(count)], dist_, device)
    return loss_sum / max(count_f, 1.0), correct_f / max(count_f, 1.0)


def run(job_dir: Path) -> int:
    doc = json.loads((job_dir / "spec.json").read_text())
    spec, runtime = jobspec.JobSpec.load(doc["spec"]), doc["runtime"]
    dist_ = Dist.from_env()
    reporter = Reporter(enabled=dist_.rank == 0)
    (job_dir / f"worker-{dist_.rank}.pid").write_text(str(os.getpid()))
    Stop.install()
    try:
        if spec.optimize is not None:
            from maas.trainer.worker import optimize

            return optimize.run(job_dir, spec, runtime, reporter)
        return _train(job_dir, spec, runtime, dist_, reporter)
    except MaasError as exc:
        reporter.emit("fatal", message=exc.message)
        return FATAL
    finally:
        if dist_.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _device(runtime: dict[str, Any], dist_: Dist) -> torch.device:
    want = runtime.get("device", "auto")
    if want in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", dist_.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _train(job_dir: Path, spec: jobspec.JobSpec, runtime: dict[str, Any], dist_: Dist, reporter: Reporter) -> int:
    threads = int(runtime.get("threads") or 0)
    if threads:
        torch.set_num_threads(threads)
    device = _device(runtime, dist_)
    if dist_.active:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    assert spec.architecture is not None and spec.optimizer is not None and spec.schedule is not None
    seed = spec.seed
    ds = spec.dataset
    data_root = Path(runtime["data_root"])
    info = datasets.describe(ds.name, ds.path, dict(ds.args), data_root)
    loaded: datasets.Loaded | None = None
    texts: text_job.TextRows | None = None
    fetch: Fetch
    if text_job.is_text(info):  # texts, tokenized by the job: (input_ids, attention_mask) rows
        texts, train_idx, val_idx = text_job.load(spec, info, data_root, seed, reporter)
        doc = text_job.architecture_document(spec, texts)
        fetch, y = texts.fetch, texts.y
    else:
        loaded = datasets.load(
            info,
            data_root,
            allow_download=bool(runtime.get("allow_download")),
            seed=seed,
            verify=bool(runtime.get("verify_datasets", True)),
        )
        train_idx, val_idx = datasets.split(len(loaded.x), spec.validation_split, seed)
        doc = spec.architecture.document()
        if catalog.parse(doc).plugin.normalize:
            mean, std = _normalization(loaded.x[train_idx])
            doc["normalize"] = {"mean": mean, "std": std}
        fetch, y = tensor_rows(loaded.x), loaded.y
    fingerprint = datasets.fingerprint(info, data_root, seed) if dist_.rank == 0 else ""
    arch = catalog.parse(doc)
    origins = {"architecture": arch.origin.label, "dataset": info.origin}

    torch.manual_seed(seed)
    model: nn.Module
    pretrained: Any = None
    if texts is not None:
        model = text_job.build(spec, arch, data_root, info.num_classes, reporter).to(device)
    else:
        model = catalog.build(arch).to(device)
        pretrained = finetune.apply(model, arch, spec.pretrained, spec.freeze_backbone, data_root)  # type: ignore[arg-type]
    optimizer = _optimizer(spec.optimizer, finetune.trainable(model))
    scheduler = _scheduler(spec.schedule, spec.epochs, optimizer)
    pos = Position()
    ckpt_dir = job_dir / "checkpoint"
    state = checkpoint.load(ckpt_dir)
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        pos = Position(**state["position"])
    trainable: nn.Module = model
    if dist_.active:
        trainable = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    batch = spec.batch_size
    epochs = spec.epochs
    per_rank = len(train_idx) // dist_.world
    steps = math.ceil(per_rank / batch)
    early = spec.early_stopping
    reporter.emit(
        "started",
        pid=os.getpid(),
        world_size=dist_.world,
        restart=restart,
        resumed=state is not None,
        epoch=pos.epoch,
        step=pos.step,
        device=str(device),
        threads=torch.get_num_threads(),
        train_samples=len(train_idx),
        val_samples=len(val_idx),
    )
    reporter.log(
        f"training {arch.name} on {info.name}: {len(train_idx)} train / {len(val_idx)} validation samples, "
        f"{epochs} epochs of {steps} steps, world size {dist_.world}, {device}"
        + (f", resumed at epoch {pos.epoch + 1} step {pos.step}" if state is not None else "")
    )
    started = time.monotonic()
    samples_done = 0
    model.train()
    stopped_early = False

    while pos.epoch < epochs:
        order = _epoch_order(train_idx, seed, pos.epoch)[dist_.rank * per_rank : (dist_.rank + 1) * per_rank]
        epoch_start = time.monotonic()
        epoch_samples = 0
        loss_acc = torch.zeros((), dtype=torch.float64, device=device)
        correct_acc = torch.zeros((), dtype=torch.int64, device=device)
        while pos.step < steps:
            idx = order[pos.step * batch : (pos.step + 1) * batch]
            yb = y[idx].to(device, non_blocking=True)
            logits = trainable(*fetch(idx, device))
            loss = nn.functional.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_acc += loss.detach().double() * len(idx)
            correct_acc += (logits.detach().argmax(1) == yb).sum()
            pos.seen += len(idx)
            pos.step += 1
            pos.global_step += 1
            epoch_samples += len(idx) * dist_.world
            samples_done += len(idx) * dist_.world
            if reporter.enabled and (reporter.step_due() or pos.step == steps):
                elapsed = time.monotonic() - started
                rate = samples_done / elapsed if elapsed > 0 else 0.0
                remaining = (epochs - pos.epoch) * per_rank * dist_.world - pos.step * batch * dist_.world
                reporter.emit(
                    "step",
                    epoch=pos.epoch + 1,
                    step=pos.step,
                    steps_per_epoch=steps,
                    global_step=pos.global_step,
                    loss=float(loss.detach()),
                    lr=optimizer.param_groups[0]["lr"],
                    samples_per_second=rate,
                    eta_seconds=max(0.0, remaining / rate) if rate > 0 else 0.0,
                )
            if Stop.requested:
                if not dist_.active:
                    pos.loss_sum += float(loss_acc)
                    pos.correct += int(correct_acc)
                    _save(ckpt_dir, model, optimizer, scheduler, pos)
                    reporter.log(f"interrupted: checkpoint at epoch {pos.epoch + 1} step {pos.step}")
                return INTERRUPTED
        pos.loss_sum += float(loss_acc)
        pos.correct += int(correct_acc)
        # Training throughput counts the training steps only; the epoch's wall
        # time (validation included) is reported beside it and drives the ETA.
        train_seconds = time.monotonic() - epoch_start
        train_loss, train_correct, train_seen = _reduce(
            [pos.loss_sum, float(pos.correct), float(pos.seen)], dist_, device
        )
        val_loss, val_acc = evaluate(model, fetch, val_idx, y, device, max(batch, 256), dist_)
        if scheduler is not None:
            scheduler.step()
        seconds = time.monotonic() - epoch_start
        metrics = {
            "train_loss": train_loss / max(train_seen, 1.0),
            "train_accuracy": train_correct / max(train_seen, 1.0),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
        }
        pos.history.append(metrics)
        pos.epoch += 1
        pos.step = 0
        pos.loss_sum, pos.correct, pos.seen = 0.0, 0, 0
        if early:
            value = metrics[early.metric]
            better = (
                pos.best is None
                or (early.higher_is_better and value > pos.best + early.min_delta)
                or (not early.higher_is_better and value < pos.best - early.min_delta)
            )
            if better:
                pos.best, pos.bad_epochs = value, 0
            else:
                pos.bad_epochs += 1
            stopped_early = pos.bad_epochs >= early.patience
        rate = epoch_samples / train_seconds if train_seconds > 0 else 0.0
        reporter.emit(
            "epoch",
            epoch=pos.epoch,
            epochs=epochs,
            metrics=metrics,
            samples_per_second=rate,
            eta_seconds=(epochs - pos.epoch) * seconds,
            seconds=seconds,
        )
        if dist_.rank == 0:
            _save(ckpt_dir, model, optimizer, scheduler, pos)
        if dist_.active:
            torch.distributed.barrier()
        if stopped_early:
            reporter.log(f"early stopping after epoch {pos.epoch}: {early.metric} did not improve")  # type: ignore[union-attr]
            break
        if Stop.requested:
            return INTERRUPTED

    final = dict(pos.history[-1]) if pos.history else {}
    if loaded is not None and loaded.test_x is not None and loaded.test_y is not None:
        test_rows = torch.arange(len(loaded.test_x))
        test_fetch = tensor_rows(loaded.test_x)
        test_loss, test_acc = evaluate(model, test_fetch, test_rows, loaded.test_y, device, max(batch, 256), dist_)
        final.update(test_loss=test_loss, test_accuracy=test_acc)
    final.pop("lr", None)
    if dist_.rank == 0:
        tolerance = float(runtime.get("onnx_tolerance", onnx_export.DEFAULT_TOLERANCE))
        found: dict[str, Any] = {"fingerprint": fingerprint, "origins": origins, "pretrained": pretrained}
        export_dir = job_dir / "export"
        if texts is not None:
            onnx = text_job.export(export_dir, model, texts, val_idx, tolerance)  # type: ignore[arg-type]
            document = text_spec.document(arch.to_dict(), spec.text)
            found["pretrained"] = text_job.lineage(spec)
        else:
            assert loaded is not None
            onnx = _export(export_dir, model, arch, loaded.x[val_idx], tolerance)  # type: ignore[arg-type]
            document = arch.to_dict()
        _result(export_dir, document, arch.signature(), final, pos, stopped_early, onnx, found)
        if onnx.ok:
            reporter.log(
                f"exported ONNX: max |onnxruntime - torch| {onnx.max_abs_diff:.3g} on {onnx.checked_rows} rows"
            )
        elif texts is not None:
            reporter.log(
                f"{onnx.reason}; text models are served from ONNX: the inference service cannot serve this one"
            )
        else:
            reporter.log(f"{onnx.reason}; the version is served from its safetensors weights")
        reporter.emit("exported", metrics=final, epochs_run=pos.epoch, stopped_early=stopped_early)
    return 0


def _save(directory: Path, model: nn.Module, optimizer: Any, scheduler: Any, pos: Position) -> None:
    checkpoint.save(
        directory,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": torch.get_rng_state(),
            "position": pos.__dict__,
        },
    )


def _export(
    directory: Path,
    model: catalog.Normalized,
    arch: catalog.Architecture,
    validation: torch.Tensor,
    onnx_tolerance: float,
) -> onnx_export.OnnxResult:
    directory.mkdir(parents=True, exist_ok=True)
    # The plain network's state_dict: normalization travels in the architecture document.
    weights = catalog.state_dict(model)
    tmp = directory / ".model.safetensors.tmp"
    save_file(weights, str(tmp))
    os.replace(tmp, directory / "model.safetensors")
    return onnx_export.export(model, arch, validation, directory, onnx_tolerance)


def _result(
    directory: Path,
    document: dict[str, Any],
    signature: dict[str, Any],
    metrics: dict[str, float],
    pos: Position,
    early: bool,
    onnx: onnx_export.OnnxResult,
    found: dict[str, Any],
) -> None:
    """result.json: what the hand-off registers (the version's document, metrics, lineage)."""
    result = {
        "architecture": document,
        "signature": signature,
        "metrics": metrics,
        "epochs_run": pos.epoch,
        "stopped_early": early,
        "onnx": onnx.to_dict(),
        # For the version's lineage: what this process read and ran, and where its catalog entries came from.
        "dataset_fingerprint": found["fingerprint"],
        "origins": found["origins"],
        "pretrained": found.get("pretrained"),
        "software": software.versions("maas-trainer", "torch", "torchvision", "onnx", "onnxruntime"),
    }
    (directory / "result.json").write_text(json.dumps(result))
