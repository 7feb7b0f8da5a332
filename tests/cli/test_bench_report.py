"""bench/report.py turns the benchmarks' JSON into one Markdown report with PNG charts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _inference() -> dict[str, object]:
    rows = []
    for model in ("mlp", "cnn"):
        for scenario in ("served", "transport ceiling", "served (stream)"):
            for c in (1, 8, 32):
                rows.append(
                    {
                        "scenario": scenario,
                        "model": model,
                        "concurrency": c,
                        "batching": "on",
                        "infer_per_s": 100.0 * c,
                        "p50_ms": 1.0 + c,
                        "p99_ms": 2.0 + c,
                        "extra": {},
                    }
                )
        for batch in (1, 8, 32):
            rows.append(
                {
                    "scenario": "torch in-process",
                    "model": model,
                    "concurrency": 0,
                    "batching": f"batch {batch}",
                    "infer_per_s": 1000.0 * batch,
                    "p50_ms": 0.1,
                    "p99_ms": 0.2,
                    "extra": {"batch": batch},
                }
            )
    return {"meta": {"when": "now", "machine": "x86_64", "cpus": 2, "loadgen": "ours", "server": "maas",
                     "goals": ["mlp at concurrency 32: goal met"]}, "results": rows}  # fmt: skip


def _registry() -> dict[str, object]:
    lists = {"ListVersions newest, first page": {"p50_ms": 5.0, "p95_ms": 7.0, "items": 100}}
    result = {"creates_per_s": 600.0, "points_per_s": 2e5, "history_100k_s": 0.2, "list_p50_ms": 5.0, "lists": lists}
    return {
        "goals": {"creates_per_s": [">=", 500.0], "points_per_s": [">=", 1e5], "history_100k_s": ["<=", 0.5],
                  "list_p50_ms": ["<=", 20.0]},
        "results": [{"backend": "sqlite", **result}, {"backend": "postgresql", **result}],
    }  # fmt: skip


def _trainer() -> dict[str, object]:
    row = {"batch": 64, "dataloader": 2000.0, "memory": 4400.0, "service": 4300.0, "service_ddp2": None,
           "service_vs_memory": 0.977, "memory_vs_dataloader": 2.2}  # fmt: skip
    return {"meta": {"machine": "x86_64", "torch": "2", "samples": 900}, "rows": [row]}


def _formats() -> dict[str, object]:
    def spread(median: float) -> dict[str, float]:
        return {"median": median, "min": median * 0.9, "max": median * 1.1}

    summary = []
    for model in ("mlp", "lenet"):
        for c in (1, 8):
            row: dict[str, object] = {"model": model, "concurrency": c, "rounds": 3}
            for i, serving in enumerate(("torch", "onnxruntime", "int8 onnxruntime")):
                row[serving] = {"infer_per_s": spread(1000.0 * c + 100 * i), "p50_ms": spread(1.0),
                                "p99_ms": spread(2.0), "errors": 0}  # fmt: skip
            row["onnxruntime/torch"] = spread(1.25)
            row["int8/onnxruntime"] = spread(0.875)
            summary.append(row)
    metrics = {"val_accuracy": 0.93, "parent_val_accuracy": 0.94, "accuracy_delta": -0.01, "size_ratio": 0.35,
               "latency_ratio": 0.8}  # fmt: skip
    models = [{"key": m, "method": "dynamic", "metrics": metrics} for m in ("mlp", "lenet")]
    meta = {"when": "now", "rounds": 3, "duration": 3.0, "load_before": "0.50 / 0.40 / 0.30",
            "load_after": "1.00 / 0.50 / 0.30", "loadgen_kind": "cpp", "server": "maas"}  # fmt: skip
    return {"meta": meta, "models": models, "summary": summary, "results": []}


def _coldstart() -> dict[str, object]:
    cold = {
        "kind": "mlp",
        "bytes": 38896,
        "rounds": 15,
        "cold": {"median": 50.5, "min": 33.4, "max": 72.2},
        "warm": {"median": 2.65, "min": 1.75, "max": 6.05},
        "server_load": {"median": 43.5, "min": 28.7, "max": 66.2},
    }
    memory = {"kind": "dense", "versions": 5, "ratio": {"median": 2.58, "min": 2.04, "max": 5.27}}
    return {"meta": {"load_before": "3.23 / 3.92 / 6.46", "load_after": "3.44 / 3.86 / 6.27"}, "cold": [cold],
            "memory": [memory]}  # fmt: skip


def test_report_from_every_benchmark(tmp_path: Path) -> None:
    docs = (("inference", _inference()), ("registry", _registry()), ("trainer", _trainer()), ("formats", _formats()),
            ("coldstart", _coldstart()))  # fmt: skip
    for name, doc in docs:
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    (tmp_path / "trainer.md").write_text("# Trainer benchmark\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    proc = subprocess.run([sys.executable, str(ROOT / "bench/report.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    images = [line[line.index("(") + 1 : -1] for line in report.splitlines() if line.startswith("![")]
    assert len(images) == 6
    for name in images:
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and min(img.size) > 100
    assert "## Trainer benchmark" in report.splitlines()  # its own tables, one level down
    assert "service / in-memory loop 0.98" in report
    assert "## Serving formats: torch, onnxruntime and int8 onnxruntime" in report
    assert "- lenet at concurrency 8: onnxruntime/torch 1.25 (1.12-1.38), int8/onnxruntime 0.88 (0.79-0.96)" in report
    assert "accuracy_delta -0.0100, size ratio 0.350" in report and "load average 0.50 / 0.40 / 0.30" in report
    assert "- mlp (38,896 bytes counted): cold 50.5 (33.4-72.2) ms, warm 2.65 (1.75-6.05) ms" in report
    assert "- dense: RSS growth per loaded version 2.58 (2.04-5.27) x what the limit counts" in report


def test_missing_results_are_reported_not_invented(tmp_path: Path) -> None:
    (tmp_path / "trainer.json").write_text(json.dumps(_trainer()))
    proc = subprocess.run([sys.executable, str(ROOT / "bench/report.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert "inference.json is missing" in report and "registry.json is missing" in report
    assert "formats.json is missing (`make bench-formats` writes it)" in report
    (tmp_path / "trainer.json").unlink()
    none = subprocess.run([sys.executable, str(ROOT / "bench/report.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert none.returncode == 1
