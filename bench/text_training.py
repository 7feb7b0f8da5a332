"""The training half of `make bench-text`: the trainer service against the plain transformers/torch loop.

One round trains the same small BERT classifier on the same texts twice, back to back (the order alternates
between rounds, so a ratio is taken within a round, under the same outside load):
- the service: a real registry and trainer (`python -m`, as the serving half starts its services) and a job
  submitted as a user submits one, `maas train --model bert ... --dataset text --dataset-path news.csv --watch
  --json` (a tokenizer trained by the job on its training split, AdamW, fixed seed, batch size and torch threads),
  registered so that its tokenizer can be downloaded. Its rate is what the trainer reports: each epoch event's
  samples_per_second, the worker's clock over the epoch's training steps (worker/loop.py): per step the batch's
  rows sliced from the tokenized tensors, forward, cross-entropy, zero_grad, backward, the optimizer step, the
  loss and accuracy sums, and a step event every 0.5 s; not the epoch's shuffle before it, nor the validation,
  the checkpoint or the export after it;
- the yardstick: the plain loop in this process: the job's own tokenizer.json (downloaded from the version) read
  by transformers' PreTrainedTokenizerFast, every training text tokenized once (truncation at max_length, padding
  to the longest), BertForSequenceClassification built by transformers from a BertConfig of the same sizes,
  torch.optim.AdamW with the same lr and weight decay, the same batch size and torch threads; timed the same
  way, over the epoch's steps after its shuffle: per step the batch indexed from the tensors, forward with the
  labels (the model's cross-entropy), backward, step, zero_grad, loss.item().
Both train epochs of whole batches of texts that are all cut at max_length (the articles are longer), so every
batch on either side is [batch, max_length] whatever the order; the bench checks that, that the yardstick's
token ids are the ones `maas.common.tokenization` (the trainer's) gives, that every round's job trained the same
tokenizer, that the job trained on the same number of texts and steps, and that both models have the same sizes
and parameter count, before it reports anything. The first epoch of each side warms up (allocators; on the
service the trainer also starts a fresh warm worker then) and is left out: a side's rate is the median of its
later epochs.

Beside samples/s, the share of a core each side's process got during each epoch's steps (/proc: the worker's CPU
time, by the pid the job logs, read as its events arrive; this process's own), and so samples per CPU second.
On a shared machine the two processes do not get the same share of the cores under the same load average (the
worker runs in a session of its own, and Linux's autogroup scheduling shares the CPU between sessions), which
moves the wall-clock ratio; the per-CPU-second ratio says what each side's software does with the CPU it gets.

The texts: the bundled BBC News set as the trainer reads it (`maas.trainer.text_data.read_bundled`), ARTICLES
articles per topic drawn with the seed and written as a CSV under the trainer's data root: a subset, so that an
epoch takes seconds at one thread and `--quick` stays short; the split is the job's (`datasets.split`).
"""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import grpcload
from tests.cli.support import MAAS, maas
from tests.inference import support

MODEL = "bench-text-train"
ARTICLES = 120  # per topic: 600 texts, 480 to train on (15 batches of 32) and 120 to validate on
VALIDATION_SPLIT = 0.2
MAX_LENGTH = 64  # tokens per text; every article is longer, so every batch is [BATCH, MAX_LENGTH]
VOCAB = 8192  # asked of the job's tokenizer (a vocabulary trained on 480 articles may stay smaller)
BATCH = 32
LR, WEIGHT_DECAY = 2e-3, 0.01
BERT = {"num_layers": 2, "hidden_size": 128, "num_heads": 2, "intermediate_size": 512}
SERVICE, PLAIN = "service", "plain"


@dataclass
class Data:
    """The CSV the job trains on, and the same training rows for the yardstick."""

    csv: Path
    train_texts: list[str]
    train_targets: list[int]
    labels: tuple[str, ...]
    texts: int


@dataclass
class Epoch:
    epoch: int
    samples_per_second: float
    train_loss: float
    seconds: float
    cpu_share: float | None = None  # CPU s per wall s of the process that trained, over the epoch's steps


@dataclass
class Side:
    """One side of one round: its epochs and what it ran with."""

    side: str
    round: int
    epochs: list[Epoch]
    load_1min: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """The median samples/s of the epochs after the first."""
        return statistics.median(e.samples_per_second for e in self.epochs[1:])

    @property
    def cpu_rate(self) -> float:
        """The median samples per CPU second of the epochs after the first (NaN where not measured)."""
        rates = [e.samples_per_second / e.cpu_share for e in self.epochs[1:] if e.cpu_share]
        return statistics.median(rates) if rates else float("nan")


# --------------------------------------------------------------------- data


def write_data(data_root: Path, seed: int) -> Data:
    """ARTICLES articles per topic of the bundled BBC News set, as text,label rows of news.csv."""
    from maas.trainer import datasets, text_data

    bundled = text_data.read_bundled()
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for k in range(len(bundled.labels)):
        topic = np.flatnonzero(bundled.targets == k)
        picked += sorted(int(i) for i in rng.choice(topic, size=ARTICLES, replace=False))
    data_root.mkdir(parents=True, exist_ok=True)
    path = data_root / "news.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([bundled.texts[i], bundled.labels[bundled.targets[i]]] for i in picked)
    train_idx, _ = datasets.split(len(picked), VALIDATION_SPLIT, seed)  # the job's split of the file's rows
    rows = [picked[i] for i in train_idx.tolist()]
    return Data(
        path, [bundled.texts[i] for i in rows], [int(bundled.targets[i]) for i in rows], bundled.labels, len(picked)
    )


# ------------------------------------------------------------------ service


def start_trainer(registry: str, work: Path, data_root: Path, threads: int) -> support.Process:
    work.mkdir(parents=True, exist_ok=True)
    env = {
        "MAAS_TRAINER_PORT": "0",
        "MAAS_TRAINER_METRICS_PORT": "0",
        "MAAS_TRAINER_DATA_DIR": str(work),
        "MAAS_TRAINER_DATA_ROOT": str(data_root),
        "MAAS_TRAINER_REGISTRY_ADDRESS": registry,
        "MAAS_TRAINER_DEFAULT_THREADS": str(threads),
        "MAAS_TRAINER_MAX_CONCURRENT_JOBS": "1",
        "MAAS_TRAINER_POLL_INTERVAL": "0.2",
        "MAAS_TRAINER_GRACE_SECONDS": "1",
        "MAAS_TRAINER_LOG_LEVEL": "WARNING",
    }
    return support.start("maas.trainer", env, work / f"trainer-{time.time_ns()}.log", ready="trainer")


def train_args(data: Data, epochs: int, seed: int, threads: int) -> list[str]:
    """`maas train` as a user types it for this job."""
    args = ["train", "--model", "bert"]
    for key, value in {**BERT, "max_positions": MAX_LENGTH}.items():
        args += ["--model-arg", f"{key}={value}"]
    args += ["--dataset", "text", "--dataset-path", data.csv.name]
    args += ["--dataset-arg", f"max_length={MAX_LENGTH}", "--dataset-arg", f"vocab_size={VOCAB}"]
    args += ["--optimizer", "adamw", "--lr", str(LR), "--weight-decay", str(WEIGHT_DECAY)]
    args += ["--epochs", str(epochs), "--batch-size", str(BATCH), "--validation-split", str(VALIDATION_SPLIT)]
    args += ["--seed", str(seed), "--threads", str(threads), "--register-as", MODEL, "--watch", "--json"]
    return args


@dataclass
class Watched:
    """`maas train --watch --json` as it ran: its lines, and the worker's CPU share over each epoch's steps."""

    rc: int
    stderr: str
    lines: list[dict[str, Any]]
    cpu_share: dict[int, float]  # epoch (from the second) -> worker CPU s per wall s


def watch_job(cli_args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Watched:
    """Run the CLI and read its events as they come; at each, the worker's CPU time (/proc, by its logged pid).

    An epoch's share is the worker's CPU over the wall time from the previous epoch's event to the last step
    event of this epoch: its training steps (and the checkpoint written after the previous event).
    """
    assert MAAS is not None, "the maas command is not installed in this environment"
    deadline = time.monotonic() + timeout
    lines: list[dict[str, Any]] = []
    worker = 0
    marks: dict[tuple[str, int], tuple[float, float]] = {}  # ("epoch" | "steps done", epoch) -> (wall, worker CPU)
    with tempfile.TemporaryFile("w+") as err:
        cmd = [MAAS, *cli_args]
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        for raw in proc.stdout:
            event = json.loads(raw)
            lines.append(event)
            now = time.monotonic()
            if "log" in event and (found := re.search(r"started worker pid (\d+)", event["log"]["message"])):
                worker = int(found.group(1))
            elif worker and "epoch" in event and "samples_per_second" in event["epoch"]:
                marks["epoch", int(event["epoch"]["epoch"])] = (now, grpcload.proc_cpu([worker]))
            elif worker and "step" in event and event["step"]["step"] == event["step"]["steps_per_epoch"]:
                marks["steps done", int(event["step"]["epoch"])] = (now, grpcload.proc_cpu([worker]))
            if now > deadline:
                proc.kill()
                break
        rc = proc.wait(30)
        err.seek(0)
        stderr = err.read()
    shares = {}
    for (kind, epoch), (t1, c1) in marks.items():
        if kind == "steps done" and ("epoch", epoch - 1) in marks:
            t0, c0 = marks["epoch", epoch - 1]
            shares[epoch] = (c1 - c0) / (t1 - t0) if t1 > t0 else float("nan")
    return Watched(rc, stderr, lines, shares)


def service_round(
    services: tuple[support.Process, support.Process], data: Data, k: int, args: Any, work: Path
) -> tuple[Side, str, dict[str, Any]]:
    """One job through the real services: its epochs as the trainer reported them, its tokenizer, its version.

    Beside the rate: the worker's share of a CPU during each epoch's steps, and the CPU the trainer's and the
    registry's own processes used during the job, which share the machine with the worker.
    """
    registry, trainer = services
    env = {"MAAS_REGISTRY_ADDRESS": registry.address, "MAAS_TRAINER_ADDRESS": trainer.address, "MAAS_TIMEOUT": "30"}
    load = os.getloadavg()[0]
    cpu = grpcload.proc_cpu([trainer.popen.pid]), grpcload.proc_cpu([registry.popen.pid])
    t0 = time.monotonic()
    done = watch_job(train_args(data, args.train_epochs, args.seed, args.threads), env, work, 1800)
    wall = time.monotonic() - t0
    if done.rc != 0 or not done.lines:
        raise RuntimeError(f"the bench's training job failed: {done.stderr.strip()[-2000:]}")
    final, events = done.lines[-1], done.lines[:-1]
    reported = [e["epoch"] for e in events if "epoch" in e]
    epochs = [
        Epoch(
            int(e["epoch"]),
            float(e["samples_per_second"]),
            float(e["metrics"]["train_loss"]),
            float(e["seconds"]),
            done.cpu_share.get(int(e["epoch"])),
        )
        for e in reported
    ]
    if len(epochs) != args.train_epochs:
        raise RuntimeError(f"the job reported {len(epochs)} epochs, not {args.train_epochs}")
    version = final["version"]
    ref = f"{version['model']}/{version['version']}"
    tokenizer = work / f"tokenizer-{k}.json"
    got = maas("versions", "download", ref, "--format", "tokenizer", "-o", str(tokenizer), env=env, cwd=work)
    if got.rc != 0:
        raise RuntimeError(f"maas versions download {ref} --format tokenizer failed: {got.stderr.strip()}")
    logs = [e["log"]["message"] for e in events if "log" in e]
    said = next((m for m in logs if m.startswith("training bert on text:")), "")
    if f" {len(data.train_texts)} train / " not in said or f" of {len(data.train_texts) // BATCH} steps" not in said:
        raise RuntimeError(f"the job did not train on the bench's {len(data.train_texts)} texts: '{said}'")
    extra = {
        "version": ref,
        "job_wall_s": wall,
        "said": said,
        "val_accuracy": float(reported[-1]["metrics"].get("val_accuracy", float("nan"))),
        "step_events": sum(1 for e in events if "step" in e),
        "trainer_cpu_s": grpcload.proc_cpu([trainer.popen.pid]) - cpu[0],
        "registry_cpu_s": grpcload.proc_cpu([registry.popen.pid]) - cpu[1],
    }
    return Side(SERVICE, k, epochs, load, extra), tokenizer.read_text(), version


# ---------------------------------------------------------------- yardstick


class Plain:
    """The plain transformers/torch loop on the job's tokenizer and training texts, in this process."""

    def __init__(self, tokenizer_json: str, data: Data, work: Path) -> None:
        import torch
        from transformers import PreTrainedTokenizerFast

        from maas.common import tokenization

        path = work / "plain-tokenizer.json"
        path.write_text(tokenizer_json)
        pad, pad_id = tokenization.pad_token(tokenization.parse(tokenizer_json))
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), pad_token=pad)
        enc = self.tokenizer(
            data.train_texts, truncation=True, max_length=MAX_LENGTH, padding="longest", return_tensors="pt"
        )
        self.ids, self.mask = enc["input_ids"], enc["attention_mask"]
        self.y = torch.tensor(data.train_targets, dtype=torch.int64)
        # The same token ids as the trainer's tokenization, and every text cut at max_length.
        theirs = tokenization.encode_batch(tokenization.load(tokenizer_json, MAX_LENGTH), data.train_texts)
        if not np.array_equal(theirs.input_ids, self.ids.numpy()) or not np.array_equal(
            theirs.attention_mask, self.mask.numpy()
        ):
            raise RuntimeError("transformers' tokenizer and maas.common.tokenization encode the texts differently")
        if int(self.mask.sum(1).min()) != MAX_LENGTH:
            raise RuntimeError(f"some training text is shorter than {MAX_LENGTH} tokens: batches would differ")
        if len(self.y) % BATCH:
            raise RuntimeError(f"{len(self.y)} training texts are not whole batches of {BATCH}")
        self.vocab_size, self.pad_id = len(self.tokenizer), pad_id
        self.labels = len(data.labels)

    def config(self) -> Any:
        from transformers import BertConfig

        config = BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=BERT["hidden_size"],
            num_hidden_layers=BERT["num_layers"],
            num_attention_heads=BERT["num_heads"],
            intermediate_size=BERT["intermediate_size"],
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=self.pad_id,
        )
        config.num_labels = self.labels
        return config

    def run(self, k: int, epochs: int, seed: int, threads: int) -> Side:
        import torch
        from transformers import BertForSequenceClassification

        load = os.getloadavg()[0]
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch.manual_seed(seed)
            model = BertForSequenceClassification(self.config())
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
            order = torch.Generator().manual_seed(seed)
            n = len(self.y)
            out = []
            for epoch in range(1, epochs + 1):
                perm = torch.randperm(n, generator=order)
                loss_sum = 0.0
                cpu0, start = time.process_time(), time.monotonic()
                for i in range(0, n, BATCH):
                    idx = perm[i : i + BATCH]
                    loss = model(input_ids=self.ids[idx], attention_mask=self.mask[idx], labels=self.y[idx]).loss
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    loss_sum += loss.item() * len(idx)
                seconds, used = time.monotonic() - start, time.process_time() - cpu0
                out.append(Epoch(epoch, n / seconds, loss_sum / n, seconds, used / seconds))
            parameters = sum(p.numel() for p in model.parameters())
            attention = model.config._attn_implementation
        finally:
            torch.set_num_threads(before)
        extra = {"threads": threads, "parameters": parameters, "attention": attention}
        return Side(PLAIN, k, out, load, extra)


def check_same_model(plain: Plain, version: dict[str, Any]) -> dict[str, Any]:
    """The job's version has the yardstick's sizes (vocabulary and pad id from the same tokenizer) and parameters."""
    from maas.common import text_architectures

    args = dict(version["architecture"]["args"])
    want = {
        **BERT,
        "max_positions": MAX_LENGTH,
        "vocab_size": plain.vocab_size,
        "pad_token_id": plain.pad_id,
        "num_classes": plain.labels,
    }
    differ = {k: (args.get(k), v) for k, v in want.items() if args.get(k) != v}
    if differ:
        raise RuntimeError(f"the job's encoder differs from the yardstick's (job, yardstick): {differ}")
    theirs = text_architectures.parameter_count("bert", text_architectures.parse_args("bert", args))
    from transformers import BertForSequenceClassification

    ours = sum(p.numel() for p in BertForSequenceClassification(plain.config()).parameters())
    if theirs != ours:
        raise RuntimeError(f"the job's encoder has {theirs} parameters, the yardstick's {ours}")
    return {"architecture_args": args, "parameters": ours}


# --------------------------------------------------------------------- main


def train_and_measure(args: Any, work: Path) -> dict[str, Any]:
    """The training half: the data, the services, then the rounds. Returns its part of the JSON document."""
    data_root = work / "trainer-data"
    data = write_data(data_root, args.seed)
    registry = support.start_registry(work / "train-registry")
    trainer: support.Process | None = None
    sides: list[Side] = []
    plain: Plain | None = None
    tokenizer_json = ""
    checks: dict[str, Any] = {}
    try:
        trainer = start_trainer(registry.address, work / "trainer", data_root, args.threads)
        quiet = grpcload.wait_for_quiet(args.quiet_load, args.quiet_patience)
        print(quiet, flush=True)
        load_before = grpcload.load_average()
        for k in range(args.rounds):
            # The yardstick needs the job's tokenizer: round 0 runs the service first; then the order alternates.
            for side in (SERVICE, PLAIN) if k % 2 == 0 else (PLAIN, SERVICE):
                if side == SERVICE:
                    done, tokenizer, version = service_round((registry, trainer), data, k, args, work)
                    if not tokenizer_json:
                        tokenizer_json = tokenizer
                        plain = Plain(tokenizer_json, data, work)
                        checks = check_same_model(plain, version)
                    elif tokenizer != tokenizer_json:
                        raise RuntimeError(f"round {k}'s job trained another tokenizer than round 0's")
                else:
                    assert plain is not None
                    done = plain.run(k, args.train_epochs, args.seed, args.threads)
                sides.append(done)
                rates = ", ".join(f"{e.samples_per_second:.1f}" for e in done.epochs)
                shares = ", ".join(f"{e.cpu_share:.2f}" if e.cpu_share else "-" for e in done.epochs)
                print(f"train round {k} {side:8s} {done.rate:7.1f} samples/s; epochs {rates}; CPU share {shares}; "
                      f"load {done.load_1min:.2f}", flush=True)  # fmt: skip
    finally:
        if trainer is not None:
            trainer.stop()
        registry.stop()
    assert plain is not None
    return half(sides, setup(args, data, plain, checks), quiet, load_before)


def half(sides: list[Side], setup: dict[str, Any], quiet: str, load_before: str) -> dict[str, Any]:
    """The training half's part of text.json: what ran, its summary, and every side of every round."""
    return {
        "quiet": quiet,
        "load_before": load_before,
        "load_after": grpcload.load_average(),
        "setup": setup,
        "summary": summarize(sides),
        "sides": [{**asdict(s), "rate": s.rate, "cpu_rate": s.cpu_rate} for s in sides],
    }


def setup(args: Any, data: Data, plain: Plain, checks: dict[str, Any]) -> dict[str, Any]:
    return {
        "texts": data.texts,
        "train_texts": len(data.train_texts),
        "articles_per_topic": ARTICLES,
        "labels": list(data.labels),
        "validation_split": VALIDATION_SPLIT,
        "max_length": MAX_LENGTH,
        "vocab_size": plain.vocab_size,
        "batch_size": BATCH,
        "epochs": args.train_epochs,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "threads": args.threads,
        "bert": dict(BERT),
        "parameters": checks["parameters"],
        "train_args": train_args(data, args.train_epochs, args.seed, args.threads),
    }


def summarize(sides: list[Side]) -> dict[str, Any]:
    """Each side's rate over the rounds (median, min, max) and the per-round ratio service / plain."""
    by: dict[str, dict[int, Side]] = {SERVICE: {}, PLAIN: {}}
    for s in sides:
        by[s.side][s.round] = s
    rounds = sorted(set(by[SERVICE]) & set(by[PLAIN]))
    return {
        "rounds": len(rounds),
        SERVICE: grpcload.spread([by[SERVICE][k].rate for k in rounds]),
        PLAIN: grpcload.spread([by[PLAIN][k].rate for k in rounds]),
        "service/plain": grpcload.spread([by[SERVICE][k].rate / by[PLAIN][k].rate for k in rounds]),
        # What each side did with the CPU it got: robust to how a shared machine's scheduler split the cores.
        "cpu": {side: grpcload.spread([by[side][k].cpu_rate for k in rounds]) for side in (SERVICE, PLAIN)},
        "service/plain per CPU second": grpcload.spread(
            [by[SERVICE][k].cpu_rate / by[PLAIN][k].cpu_rate for k in rounds]
        ),
        "cpu_share": {
            side: grpcload.spread([e.cpu_share for k in rounds for e in by[side][k].epochs[1:] if e.cpu_share])
            for side in (SERVICE, PLAIN)
        },
        "final_train_loss": {
            side: grpcload.spread([by[side][k].epochs[-1].train_loss for k in rounds]) for side in (SERVICE, PLAIN)
        },
    }


def report(training: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """The Markdown section of bench/out/text.md."""
    s, summary = training["setup"], training["summary"]
    bert = ", ".join(f"{k} {v}" for k, v in s["bert"].items())
    lines = [
        "## Training: the trainer service against the plain transformers/torch loop",
        "",
        f"The same BERT classifier ({bert}, max_positions {s['max_length']}; {s['parameters']:,} parameters, "
        f"vocabulary {s['vocab_size']:,} from the job's own WordPiece tokenizer), from random weights, on the same "
        f"{s['train_texts']} BBC News articles ({s['articles_per_topic']} per topic, {s['validation_split']:g} held "
        f"out), each cut at {s['max_length']} tokens; AdamW (lr {s['lr']:g}, weight decay {s['weight_decay']:g}), "
        f"batch {s['batch_size']}, {s['threads']} torch thread(s), {s['epochs']} epochs a side and round.",
        "",
        f"- Service: `maas {' '.join(s['train_args'])}` against a real registry and trainer; its rate is each epoch "
        "event's samples_per_second (the worker's clock over the epoch's training steps).",
        f"- Yardstick: BertForSequenceClassification and torch.optim.AdamW ({meta.get('train_yardstick', '?')}) in "
        "the benchmark's process, on the job's tokenizer.json (downloaded from its version) with the texts tokenized "
        "once, timed over the same steps.",
        f"- A side's rate is the median of its epochs after the first; each figure is the median of "
        f"{summary['rounds']} rounds (min-max), the order alternating between rounds, the ratio taken within a "
        f"round. Load average {training['load_before']} at the start, {training['load_after']} at the end "
        f"({training['quiet']}).",
        "",
        "| side | samples/s | CPU share over the steps | samples per CPU second | final epoch's train loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for side, name in ((SERVICE, "service (trainer worker)"), (PLAIN, "plain transformers/torch loop")):
        loss, share = summary["final_train_loss"][side], summary["cpu_share"][side]
        lines.append(
            f"| {name} | {grpcload.spread_text(summary[side], ',.1f')} | {grpcload.spread_text(share, '.2f')} "
            f"| {grpcload.spread_text(summary['cpu'][side], ',.1f')} | {grpcload.spread_text(loss, '.3f')} |"
        )
    lines += [
        "",
        f"- {verdict(summary['service/plain'])}",
        f"- Per CPU second (each epoch's samples/s over the share of a core its process got during the steps, read "
        f"from /proc): service / plain {grpcload.spread_text(summary['service/plain per CPU second'], '.2f')}. On a "
        "shared machine the scheduler's split of the cores moves the first ratio; this one says what each side "
        "does with the CPU it gets.",
        "",
        "| round | side | load (1 min) | samples/s per epoch (the first warms up) | CPU share per epoch | beside it |",
        "|---:|---|---:|---|---|---|",
    ]
    for side in training["sides"]:
        rates = ", ".join(f"{e['samples_per_second']:.1f}" for e in side["epochs"])
        shares = ", ".join(f"{e['cpu_share']:.2f}" if e.get("cpu_share") else "-" for e in side["epochs"])
        lines.append(
            f"| {side['round']} | {side['side']} | {side['load_1min']:.2f} | {rates} | {shares} | {_beside(side)} |"
        )
    return lines


def _beside(side: dict[str, Any]) -> str:
    """What else a service row says: the job's wall time, the CPU of the service's own processes during it."""
    e = side.get("extra", {})
    if side["side"] == SERVICE and "job_wall_s" in e:
        return (
            f"job {e['job_wall_s']:.0f} s in all; trainer process {e['trainer_cpu_s']:.1f} CPU s, registry "
            f"{e['registry_cpu_s']:.1f} CPU s during it"
        )
    return ""


def verdict(ratio: dict[str, float] | None) -> str:
    if not ratio:
        return "no ratio"
    r = ratio["median"]
    goal = "meets" if r >= 0.95 else "misses"
    return (
        f"The service trains at {r:.2f} of the plain loop's samples/s (rounds {ratio['min']:.2f}-{ratio['max']:.2f}; "
        f"median ratio per round), which {goal} the goal of 0.95."
    )
