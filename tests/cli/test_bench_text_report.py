"""bench/text_bench.py's results, summarized and written as it writes them, become their section of the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from bench import text_bench as tb
from bench import text_training as tt
from bench.grpcload import Result

ROOT = Path(__file__).resolve().parents[2]
SERVICE_RATES = {1: (400.0, 450.0, 500.0), 8: (600.0, 700.0, 800.0)}
IN_PROCESS_RATES = {1: (800.0, 1000.0, 1000.0), 8: (1000.0, 1000.0, 1100.0)}


def _service(c: int, k: int) -> Result:
    rate = SERVICE_RATES[c][k]
    rows = int(rate * 3)
    stats = {"requests": rows, "queue_ns": 0, "executions": rows // (4 if c == 8 else 1), "rows": rows,
             "input_ns": 250_000 * rows, "infer_ns": 750_000 * rows, "output_ns": 0}  # fmt: skip
    return Result(tb.SERVICE, tb.MODEL, c, "on", rows, 0, 3.0, rate, 2.0, 6.0, 5.0, 0.5,
                  extra={"round": k, "stats": stats, "machine_busy_cpu_s": 5.9})  # fmt: skip


def _in_process(c: int, k: int) -> Result:
    rate = IN_PROCESS_RATES[c][k]
    texts = int(rate * 3)
    extra = {"round": k, "batch": c, "texts": texts, "tokenize_s": 0.6, "run_s": 2.4, "machine_busy_cpu_s": 3.1}
    return Result(tb.IN_PROCESS, tb.MODEL, c, f"batch {c}", texts // c, 0, 3.0, rate, 1.0, 3.0, 3.0, 0.0, extra=extra)


def _bench_output(out: Path, training: dict[str, Any] | None = None) -> None:
    results = [side(c, k) for k in range(3) for c in (1, 8) for side in (_service, _in_process)]
    words = {"min": 8.0, "median": 20.0, "max": 40.0}
    model = tb.TextModel(out / "bert.onnx", out / "tokenizer.json", 1_479_173, 5_966_979, 8192,
                         ["a sentence of eight words for the bench"] * 4, words, {"min": 11.0, "median": 29.0, "max": 58.0},
                         "BBC News", 10.0)  # fmt: skip
    serving: dict[str, Any] = {"checks": {"texts": 8, "max_abs_diff": 0.0}, "summary": tb.summarize(results)}
    meta = {"when": "2026-12-07", "machine": "x86_64", "cpus": 2, "loadgen": "ours in C++", "server": "maas",
            "yardstick": "onnxruntime", "bert": "hidden_size 128", "rounds": 3, "duration": 3.0, "warmup": 1.0,
            "quiet": "machine quiet at start", "load_before": "0.50 / 0.40 / 0.30", "load_after": "1.00 / 0.50 / 0.30",
            "other_cpu": "median 2 %, max 5 %", "run_seconds": 60.0}  # fmt: skip
    (out / "text.json").write_text(json.dumps(tb.document(meta, model, serving, training)))
    (out / "text.md").write_text(tb.report(meta, model, serving, training))


def _report(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench/report.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_text_benchmark_has_its_section_with_ratios_and_tokenization_share(tmp_path: Path) -> None:
    _bench_output(tmp_path)
    proc = _report(tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert (
        "## Text: a BERT classifier trained by the service and served with server-side tokenization"
        in report.splitlines()
    )
    # Per round: 400/800, 450/1000, 500/1000 at concurrency 1; 600/1000, 700/1000, 800/1100 at 8.
    assert "service / in-process 0.50 (0.45-0.50)" in report
    assert "- concurrency 8 (in-process 8 per call): service 700/s, in-process 1,000/s" in report
    assert (
        "service / in-process 0.70 (0.60-0.73); tokenization 25 % of the service's compute (20 % in-process)" in report
    )
    assert "4.0 rows per execution" in report
    # The bench's own tables, one level down, with its verdict in words.
    assert "### Serving: server-side tokenization against onnxruntime in-process" in report.splitlines()
    assert "At concurrency 1 the service is 50 % slower than onnxruntime in-process on one text per call" in report
    images = [line[line.index("(") + 1 : -1] for line in report.splitlines() if line.startswith("![text")]
    assert images == ["text_serving.png"]
    with Image.open(tmp_path / images[0]) as img:
        assert img.format == "PNG" and min(img.size) > 100


def test_without_text_results_the_section_says_so(tmp_path: Path) -> None:
    proc = _report(tmp_path)
    assert proc.returncode == 1  # nothing at all to report
    assert "text.json is missing (`make bench-text` writes it)" in (tmp_path / "report.md").read_text()


# Per round, the epochs after the first: service 80, 100, 90 samples/s; plain 100, 96, 78 (ratios 0.80, 1.04, 1.15).
TRAINING_EPOCHS = {
    tt.SERVICE: ([10.0, 79.0, 80.0, 81.0], [20.0, 100.0, 99.0, 101.0], [5.0, 90.0, 91.0, 89.0]),
    tt.PLAIN: ([50.0, 100.0, 100.0, 100.0], [60.0, 96.0, 95.0, 97.0], [70.0, 78.0, 78.0, 78.0]),
}


# The share of a core each side's process got: per CPU second, service 160, 200, 180 against 100, 96, 78.
SHARES = {tt.SERVICE: 0.5, tt.PLAIN: 1.0}


def _training() -> dict[str, Any]:
    sides = [
        tt.Side(
            side,
            k,
            [tt.Epoch(e + 1, rate, 1.0 - 0.1 * e, 480 / rate, SHARES[side]) for e, rate in enumerate(rates)],
            0.5,
        )
        for k in range(3)
        for side, rounds in TRAINING_EPOCHS.items()
        for rates in [rounds[k]]
    ]
    setup = {"texts": 600, "train_texts": 480, "articles_per_topic": 120, "labels": ["a", "b"],
             "validation_split": 0.2, "max_length": 64, "vocab_size": 6919, "batch_size": 32, "epochs": 4,
             "lr": 0.002, "weight_decay": 0.01, "threads": 1, "bert": {"num_layers": 2}, "parameters": 1_308_037,
             "train_args": ["train", "--model", "bert"]}  # fmt: skip
    return tt.half(sides, setup, "machine quiet at start", "0.50 / 0.40 / 0.30")


def test_the_training_half_reports_the_per_round_ratio_of_steady_epochs(tmp_path: Path) -> None:
    _bench_output(tmp_path, training=_training())
    proc = _report(tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    # The first epoch of each side is left out; the ratio is per round (the ratio of the medians would be 0.94).
    assert (
        "service 90.0 samples/s, plain transformers/torch loop 96.0 samples/s, service / plain 1.04 (0.80-1.15; goal 0.95)"
        in report
    )
    assert "service / in-process 0.50 (0.45-0.50)" in report  # the serving half is still there
    own = (tmp_path / "text.md").read_text()
    assert "## Training: the trainer service against the plain transformers/torch loop" in own.splitlines()
    assert "The service trains at 1.04 of the plain loop's samples/s (rounds 0.80-1.15" in own
    assert "service / plain 2.08 (1.60-2.31)" in own
    assert any(line.startswith("| 0 | service | 0.50 | 10.0, 79.0, 80.0, 81.0 |") for line in own.splitlines())
    assert json.loads((tmp_path / "text.json").read_text())["training"]["summary"]["rounds"] == 3


def test_a_training_only_run_has_its_section_without_the_serving_half(tmp_path: Path) -> None:
    meta = {"when": "2026-12-07", "machine": "x86_64", "cpus": 2, "rounds": 3, "quick": False,
            "load_after": "1.00 / 0.50 / 0.30", "run_seconds": 300.0, "train_yardstick": "transformers 5"}  # fmt: skip
    training = _training()
    (tmp_path / "text.json").write_text(json.dumps(tb.document(meta, None, None, training)))
    (tmp_path / "text.md").write_text(tb.report(meta, None, None, training))
    proc = _report(tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert "service / plain 1.04 (0.80-1.15; goal 0.95)" in report
    assert "Could not read" not in report and "### Serving" not in report
