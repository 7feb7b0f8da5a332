"""`maas metrics MODEL VERSION`: the metric history of the run that produced a version."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from maas.cli import charts, refs
from maas.cli.context import Context
from maas.cli.output import print_json
from maas.common import errors

PREFERRED = ("val_accuracy", "val_loss", "train_loss", "train_accuracy")


def run(args: argparse.Namespace, ctx: Context) -> int:
    version = refs.resolve(ctx.registry, refs.join(args.model, args.version))
    ref = f"{version.model}/{version.version}"
    if not version.run_id:
        raise errors.FailedPrecondition(f"{ref} has no training run, so no metric history")
    run_record = ctx.registry.get_run(version.run_id)
    available = sorted(run_record.metrics)
    keys = args.key or [k for k in PREFERRED if k in run_record.metrics] or available
    missing = [k for k in keys if k not in run_record.metrics]
    if missing:
        raise errors.NotFound(f"{ref} has no metric {', '.join(missing)} (it has: {', '.join(available) or 'none'})")
    series: dict[str, tuple[list[int], list[float]]] = {}
    for key in keys:
        history = ctx.registry.metric_history(version.run_id, key)
        series[key] = ([int(x) for x in history.steps], list(history.values))
    if args.png:
        charts.png_chart(series, Path(args.png), title=ref)
    if ctx.json:
        print_json(
            {
                "model": version.model,
                "version": version.version,
                "run_id": version.run_id,
                "metrics": {k: {"steps": s, "values": v} for k, (s, v) in series.items()},
                "png": args.png,
            }
        )
        return 0
    if args.png:
        print(f"wrote {args.png} ({', '.join(keys)} of {ref})")
        return 0
    encoding = (sys.stdout.encoding or "").lower()
    for index, (key, (steps, values)) in enumerate(series.items()):
        if index:
            print()
        last = f"last {values[-1]:.4g}" if values else "no points"
        title = f"{ref} {key}  ({len(values)} points, {last})"
        for line in charts.text_chart(
            steps, values, width=args.width, height=args.height, title=title, unicode="utf" in encoding
        ):
            print(line)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "metrics",
        parents=[common],
        help="chart a version's metric history (terminal, or --png)",
        description="The metric history of the training run behind MODEL VERSION (a number or an alias). "
        "Default metrics: val_accuracy, val_loss, train_loss (those present).",
    )
    p.add_argument("model")
    p.add_argument("version", help="a number or an alias")
    p.add_argument(
        "-k",
        "--key",
        action="append",
        metavar="METRIC",
        help="metric to chart (repeatable): "
        "val_accuracy, val_loss, train_loss, loss (per step), samples_per_second, ...",
    )
    p.add_argument("--png", metavar="FILE", help="write a PNG chart instead")
    p.add_argument("--width", type=int, default=60, help="terminal chart width in characters")
    p.add_argument("--height", type=int, default=10, help="terminal chart height in lines")
    p.add_argument("--json", action="store_true", help="the series as JSON")
    p.set_defaults(func=run)
