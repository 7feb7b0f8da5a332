"""`make bench` (last step): one Markdown report with charts from the benchmarks' JSON files.

Reads bench/out/{inference,registry,trainer,overload,formats,text,coldstart}.json (or --out DIR) (each written by
its own benchmark), draws PNG charts next to them, and writes bench/out/report.md: per benchmark its charts and the
benchmark's own Markdown tables (bench/out/<name>.md). A missing or unreadable result is
reported as such; the report fails only when there is nothing at all to report.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

OUT = Path(__file__).resolve().parent / "out"
COLORS = {"served": "C0", "transport ceiling": "C1", "served (stream)": "C2", "transport ceiling (stream)": "C3"}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _save(fig: Any, name: str) -> str:
    fig.tight_layout()
    fig.savefig(OUT / name, dpi=110)
    plt.close(fig)
    return name


# ---------------------------------------------------------------- inference


def _inference_series(results: list[dict[str, Any]], model: str) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for row in results:
        if row.get("model") != model or not row.get("concurrency"):
            continue
        label = row["scenario"] + ("" if row.get("batching", "on") == "on" else ", batching off")
        series.setdefault(label, []).append((int(row["concurrency"]), row))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in series.items()}


def _style(label: str) -> dict[str, Any]:
    base = label.split(", batching off")[0]
    return {"color": COLORS.get(base, "C4"), "linestyle": "--" if "batching off" in label else "-", "marker": "o"}


def inference(data: dict[str, Any]) -> list[str]:
    results = data["results"]
    models = sorted({r["model"] for r in results if r.get("concurrency")})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for label, points in _inference_series(results, model).items():
            ax.plot([c for c, _ in points], [r["infer_per_s"] for _, r in points], label=label, **_style(label))
        ceiling = sorted(
            (int(r["extra"]["batch"]), r["infer_per_s"])
            for r in results
            if r.get("model") == model and r.get("scenario") == "torch in-process" and r.get("extra", {}).get("batch")
        )
        if ceiling:
            ax.plot(
                *zip(*ceiling, strict=True),
                color="grey",
                linestyle=":",
                marker="s",
                label="torch in-process (batch = concurrency)",
            )
        ax.set_yscale("log")
        _axes(ax, f"{model}: throughput", "infer/s (log)")
    throughput = _save(fig, "inference_throughput.png")

    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for label, points in _inference_series(results, model).items():
            if label.startswith("transport"):
                continue
            style = _style(label)
            xs = [c for c, _ in points]
            ax.plot(xs, [r["p50_ms"] for _, r in points], label=f"{label} p50", **style)
            ax.plot(xs, [r["p99_ms"] for _, r in points], label=f"{label} p99", alpha=0.5, **{**style, "marker": "^"})
        ax.set_yscale("log")
        _axes(ax, f"{model}: latency", "ms")
    latency = _save(fig, "inference_latency.png")

    meta = data.get("meta", {})
    lines = [
        f"Measured {meta.get('when', '?')} on {meta.get('machine', '?')} ({meta.get('cpus', '?')} CPUs); "
        f"load generator: {meta.get('loadgen', '?')}; server: {meta.get('server', '?')}.",
        "",
    ]
    if meta.get("goals"):
        lines += ["Goals:", "", *[f"- {goal}" for goal in meta["goals"]], ""]
    lines += [f"![inference throughput]({throughput})", "", f"![inference latency]({latency})"]
    return lines


def _axes(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


# ----------------------------------------------------------------- registry


def registry(data: dict[str, Any]) -> list[str]:
    results = data["results"]
    backends = [r["backend"] for r in results]
    operations = list(results[0]["lists"])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(operations) * len(backends) + 1.5))
    height = 0.8 / len(backends)
    for i, row in enumerate(results):
        ys = [j + i * height for j in range(len(operations))]
        ax.barh(ys, [row["lists"][op]["p50_ms"] for op in operations], height=height, label=row["backend"])
    goal = data.get("goals", {}).get("list_p50_ms")
    if goal:
        ax.axvline(goal[1], color="red", linestyle="--", label=f"goal {goal[0]} {goal[1]} ms")
    ax.set_yticks([j + height * (len(backends) - 1) / 2 for j in range(len(operations))], operations, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("p50 ms")
    ax.set_title("registry: paged lists and searches")
    ax.legend()
    ax.grid(True, axis="x", alpha=0.3)
    lists = _save(fig, "registry_lists.png")

    # Headline figures as a fraction of their goal (>= 1 means met), per backend.
    goals = data.get("goals", {})
    keys = [k for k in ("creates_per_s", "points_per_s", "history_100k_s", "list_p50_ms") if k in goals]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(backends)
    for i, row in enumerate(results):
        ratios = []
        for key in keys:
            op, target = goals[key]
            value = row.get(key)
            ok = _finite(value) and value > 0
            ratios.append((value / target if op == ">=" else target / value) if ok else 0.0)
        ax.bar([j + i * width for j in range(len(keys))], ratios, width=width, label=row["backend"])
    ax.axhline(1.0, color="red", linestyle="--", label="goal")
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(keys))], keys, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("measured / goal (higher is better)")
    ax.set_title("registry: headline figures against their goals")
    ax.legend()
    ax.grid(True, axis="y", which="both", alpha=0.3)
    headline = _save(fig, "registry_goals.png")
    return [f"![registry against goals]({headline})", "", f"![registry lists]({lists})"]


# ------------------------------------------------------------------ trainer


def trainer(data: dict[str, Any]) -> list[str]:
    rows = data["rows"]
    kinds = [
        ("dataloader", "tutorial loop (DataLoader)"),
        ("memory", "in-memory loop"),
        ("service", "trainer service"),
        ("service_ddp2", "trainer service, DDP world_size 2"),
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(kinds)
    for i, (key, label) in enumerate(kinds):
        values = [r.get(key) if _finite(r.get(key)) else 0.0 for r in rows]
        bars = ax.bar([j + i * width for j in range(len(rows))], values, width=width, label=label)
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v else "-" for v in values], fontsize=7)
    ax.set_xticks([j + width * (len(kinds) - 1) / 2 for j in range(len(rows))], [f"batch {r['batch']}" for r in rows])
    ax.set_ylabel("training samples/s")
    ax.set_title("trainer: the service against the same training in a plain script")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    chart = _save(fig, "trainer_throughput.png")
    meta = data.get("meta", {})
    ratios = [
        f"- batch {r['batch']}: service / in-memory loop {r['service_vs_memory']:.2f}, "
        f"in-memory / DataLoader loop {r['memory_vs_dataloader']:.2f}"
        for r in rows
        if _finite(r.get("service_vs_memory")) and _finite(r.get("memory_vs_dataloader"))
    ]
    head = f"{meta.get('machine', '?')}, torch {meta.get('torch', '?')}, {meta.get('samples', '?')} samples."
    return [head, "", *ratios, "", f"![trainer throughput]({chart})"]


def overload(data: dict[str, Any]) -> list[str]:
    r = data["result"]
    codes = ", ".join(f"{code} {n:,}" for code, n in sorted(r["codes"].items()))
    refused, admitted, rss = r["refusal_latency"], r["admitted_latency"], r["rss_mib"]
    return [
        f"{r['factor']:g} x the measured capacity ({r['capacity_per_s']:,.1f} req/s) offered to one inference "
        f"process ({r['offered_rate_per_s']:,.1f} req/s from {r['connections']} connections): {codes}.",
        "",
        f"- refusals answered in p50 {refused['p50_ms']} ms, p99 {refused['p99_ms']} ms",
        f"- admitted requests: {r['admitted_per_s']:,.1f} req/s, p99 {admitted['p99_ms']} ms "
        f"(bounded by the queue of {r['settings']['max_queue_size']})",
        f"- server RSS {rss['before']} MiB before, {rss['peak_during']} MiB at the peak, {rss['after']} MiB after",
        f"- afterwards {r['after']['ok']} of {r['after']['calls']} ordinary requests OK, p99 {r['after']['p99_ms']} ms",
    ]


# ------------------------------------------------------------------ formats

SERVINGS = (("torch", "C0"), ("onnxruntime", "C1"), ("int8 onnxruntime", "C2"))


def formats(data: dict[str, Any]) -> list[str]:
    """Per concurrency, each model's three servings (median of the rounds, min-max as error bars)."""
    summary = data["summary"]
    concurrencies = sorted({int(row["concurrency"]) for row in summary})
    fig, axes = plt.subplots(1, len(concurrencies), figsize=(6.5 * len(concurrencies), 4.5), squeeze=False)
    width = 0.8 / len(SERVINGS)
    for ax, c in zip(axes[0], concurrencies, strict=True):
        rows = [row for row in summary if int(row["concurrency"]) == c]
        for i, (serving, color) in enumerate(SERVINGS):
            spread = [row[serving]["infer_per_s"] for row in rows]
            medians = [s["median"] for s in spread]
            errors = [[s["median"] - s["min"] for s in spread], [s["max"] - s["median"] for s in spread]]
            xs = [j + i * width for j in range(len(rows))]
            bars = ax.bar(xs, medians, width=width, yerr=errors, capsize=3, color=color, label=serving)
            ax.bar_label(bars, labels=[f"{v:,.0f}" for v in medians], fontsize=6)
        ax.set_xticks([j + width for j in range(len(rows))], [row["model"] for row in rows], fontsize=8)
        ax.set_ylabel("infer/s (median of rounds, min-max)")
        ax.set_title(f"served at concurrency {c}")
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    chart = _save(fig, "formats_throughput.png")
    meta = data.get("meta", {})
    lines = [
        f"Measured {meta.get('when', '?')}, {meta.get('rounds', '?')} rounds of {meta.get('duration', '?')} s per "
        f"point; load average {meta.get('load_before', '?')} at the start, {meta.get('load_after', '?')} at the end; "
        f"load generator: {meta.get('loadgen_kind', '?')}; servers: {meta.get('server', '?')}.",
        "",
    ]
    for row in summary:
        ratios = [
            f"{label} {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"
            for label in ("onnxruntime/torch", "int8/onnxruntime")
            if (r := row.get(label))
        ]
        lines.append(f"- {row['model']} at concurrency {row['concurrency']}: {', '.join(ratios)}")
    for model in data.get("models", []):
        m = model["metrics"]
        lines.append(
            f"- {model['key']} int8 ({model['method']}): val_accuracy {m['val_accuracy']:.4f} against "
            f"{m['parent_val_accuracy']:.4f}, accuracy_delta {m['accuracy_delta']:+.4f}, "
            f"size ratio {m['size_ratio']:.3f}"
        )
    return [*lines, "", f"![formats throughput]({chart})"]


# --------------------------------------------------------------------- text

TEXT_SIDES = (("service", "service (server-side tokenization)", "C0"), ("in-process", "onnxruntime in-process", "C1"))


def text(data: dict[str, Any]) -> list[str]:
    """The text benchmark: its serving half and its training half, each where it ran."""
    meta, lines = data["meta"], []
    if "serving" in data:
        model = data["model"]
        lines += [
            f"Measured {meta['when']}, {meta['rounds']} rounds of {meta['duration']} s per point; load average "
            f"{meta['load_before']} at the start, {meta['load_after']} at the end; the rest of the machine used "
            f"{meta['other_cpu']} of the cores. A BERT classifier ({meta['bert']}; {model['parameters']:,} "
            f"parameters, vocabulary {model['vocab_size']:,}), {len(model['texts'])} sentences of "
            f"{model['words']['min']:.0f}-{model['words']['max']:.0f} words, one per request.",
            "",
            *_text_serving(data["serving"]["summary"]),
        ]
    if "training" in data:
        lines += ["", *_text_training(data["training"])] if lines else _text_training(data["training"])
    return lines


def _text_training(training: dict[str, Any]) -> list[str]:
    """Training samples/s of the trainer service against the plain transformers/torch loop, and their ratio."""
    setup, summary = training["setup"], training["summary"]
    service, plain, ratio = summary["service"], summary["plain"], summary["service/plain"]
    per_cpu = summary.get("service/plain per CPU second")
    return [
        f"- training ({setup['train_texts']} BBC News articles cut at {setup['max_length']} tokens, batch "
        f"{setup['batch_size']}, {setup['threads']} thread(s), {summary['rounds']} rounds of {setup['epochs']} "
        f"epochs a side; load average {training['load_before']} at the start): service "
        f"{service['median']:,.1f} samples/s, plain transformers/torch loop {plain['median']:,.1f} samples/s, "
        f"service / plain {ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f}; goal 0.95)"
        + (f"; per CPU second {per_cpu['median']:.2f} ({per_cpu['min']:.2f}-{per_cpu['max']:.2f})" if per_cpu else "")
    ]


def _text_serving(summary: list[dict[str, Any]]) -> list[str]:
    """Throughput of both sides per concurrency, and where a text's wall time goes."""
    fig, (ax, split) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(TEXT_SIDES)
    for i, (side, label, color) in enumerate(TEXT_SIDES):
        spread = [row[side]["infer_per_s"] for row in summary]
        medians = [s["median"] for s in spread]
        errors = [[s["median"] - s["min"] for s in spread], [s["max"] - s["median"] for s in spread]]
        bars = ax.bar([j + i * width for j in range(len(summary))], medians, width=width, yerr=errors, capsize=3,
                      color=color, label=label)  # fmt: skip
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in medians], fontsize=7)
    ax.set_xticks(
        [j + width / 2 for j in range(len(summary))],
        [f"concurrency {r['concurrency']}\n(in-process: {r['batch']} per call)" for r in summary],
        fontsize=8,
    )
    ax.set_ylabel("texts/s (median of rounds, min-max)")
    ax.set_title("text classification served vs in-process")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    # Wall time per text (1 / throughput) split into tokenization, the graph, and everything else.
    labels: list[str] = []
    parts: dict[str, list[float]] = {"tokenization": [], "graph": [], "the rest (transport, Python, waiting)": []}
    for row in summary:
        for side, _, _ in TEXT_SIDES:
            r = row[side]
            wall = 1e6 / r["infer_per_s"]["median"]
            tokenize, graph = r["tokenize_us"]["median"], r["graph_us"]["median"]
            labels.append(f"{side}\nc={row['concurrency']}")
            for key, value in zip(parts, (tokenize, graph, max(0.0, wall - tokenize - graph)), strict=True):
                parts[key].append(value)
    bottom = [0.0] * len(labels)
    for key, values in parts.items():
        split.bar(range(len(labels)), values, bottom=bottom, label=key)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    split.set_xticks(range(len(labels)), labels, fontsize=7)
    split.set_ylabel("µs of wall time per text (medians)")
    split.set_title("where a text's time goes")
    split.legend(fontsize=7)
    split.grid(True, axis="y", alpha=0.3)
    chart = _save(fig, "text_serving.png")
    lines = []
    for row in summary:
        s, y, ratio = row["service"], row["in-process"], row["service/in-process"]
        lines.append(
            f"- concurrency {row['concurrency']} (in-process {row['batch']} per call): service "
            f"{s['infer_per_s']['median']:,.0f}/s, in-process {y['infer_per_s']['median']:,.0f}/s, service / "
            f"in-process {ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f}); tokenization "
            f"{s['share']['median'] * 100:.0f} % of the service's compute ({y['share']['median'] * 100:.0f} % "
            f"in-process), {s['rows_per_execution']['median']:.1f} rows per execution"
        )
    return [*lines, "", f"![text serving]({chart})"]


# ------------------------------------------------------------------- report

# ---------------------------------------------------------------- cold start


def _spread(s: dict[str, float] | None, fmt: str) -> str:
    return "-" if not s else f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def coldstart(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    lines = [
        "Two versions of each kind under a memory limit that holds one, asked for in turn: each request waits "
        f"for its model's load (median, min-max over the rounds; load average {meta['load_before']} before, "
        f"{meta['load_after']} after).",
        "",
    ]
    for r in data["cold"]:
        lines.append(
            f"- {r['kind']} ({r['bytes']:,} bytes counted): cold {_spread(r['cold'], '.1f')} ms, "
            f"warm {_spread(r['warm'], '.2f')} ms, the server's load {_spread(r['server_load'], '.1f')} ms "
            f"({r['rounds']} rounds)"
        )
    for m in data.get("memory", []):
        lines.append(
            f"- {m['kind']}: RSS growth per loaded version {_spread(m['ratio'], '.2f')} x what the limit counts "
            f"({m['versions']} versions)"
        )
    return lines


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], list[str]]]] = [
    ("inference", "Inference: throughput and latency against concurrency", inference),
    ("registry", "Registry operations", registry),
    ("trainer", "Trainer throughput", trainer),
    ("overload", "Inference at ten times its capacity", overload),
    ("formats", "Serving formats: torch, onnxruntime and int8 onnxruntime", formats),
    ("text", "Text: a BERT classifier trained by the service and served with server-side tokenization", text),
    ("coldstart", "Cold start of an evicted model under a memory limit", coldstart),
]


def _own_tables(name: str) -> list[str]:
    """The benchmark's own Markdown, headings moved one level down."""
    path = OUT / f"{name}.md"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    return [
        "",
        "<details><summary>the benchmark's own tables</summary>",
        "",
        *[("#" + line) if line.startswith("#") else line for line in lines],
        "",
        "</details>",
    ]


def main(argv: list[str] | None = None) -> int:
    global OUT
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["--out"] and len(args) == 2:
        OUT = Path(args[1])
    OUT.mkdir(parents=True, exist_ok=True)
    doc = ["# maas benchmarks", "", f"Report written {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by `bench/report.py`.", ""]
    rendered = 0
    for name, title, render in SECTIONS:
        doc += [f"## {title}", ""]
        path = OUT / f"{name}.json"
        if not path.is_file():
            doc += [f"Not measured: {path.name} is missing (`make bench-{name}` writes it).", ""]
            continue
        try:
            body = render(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            doc += [f"Could not read {path.name} ({type(exc).__name__}: {exc}); its own tables follow.", ""]
            doc += [*_own_tables(name), ""]
            continue
        rendered += 1
        doc += body + _own_tables(name) + [""]
    (OUT / "report.md").write_text("\n".join(doc) + "\n")
    print(f"wrote {OUT / 'report.md'} ({rendered} of {len(SECTIONS)} benchmarks)")
    return 0 if rendered else 1


if __name__ == "__main__":
    sys.exit(main())
