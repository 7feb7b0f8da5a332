"""bench/text_bench.py's results, summarized and written as it writes them, become their section of the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from bench import text_bench as tb
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


def _bench_output(out: Path) -> None:
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
    (out / "text.json").write_text(json.dumps(tb.document(meta, model, serving)))
    (out / "text.md").write_text(tb.report(meta, model, serving))


def _report(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench/report.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_text_benchmark_has_its_section_with_ratios_and_tokenization_share(tmp_path: Path) -> None:
    _bench_output(tmp_path)
    proc = _report(tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert "## Text: a BERT classifier served with server-side tokenization" in report.splitlines()
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
