"""Validate a declarative job spec and resolve its defaults.

Nothing in a spec is executed: the model and data set are names looked up in
the installed catalog (entry-point plugins, the built-in ones among them),
their arguments are checked by each entry's pydantic model, every number is
range-checked, and the only path a client may give (a data set's file or
folder) must stay under the operator's data root. The result
is a plain JSON document - the resolved spec - which is stored with the job
and handed to the worker.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from maas.common import architectures, names, plugins
from maas.common.errors import FailedPrecondition, InvalidArgument
from maas.common.metric_direction import higher_is_better
from maas.trainer import datasets, text_spec
from maas.trainer.pretrained_weights import resolve as resolve_pretrained

OPTIMIZERS = {"sgd": 0.01, "adam": 0.001, "adamw": 0.001}
SCHEDULES = ("none", "step", "cosine", "exponential")
METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")


def promotion_rule(
    promo: dict[str, Any], field: str, metrics: tuple[str, ...], better_when_higher: Any
) -> dict[str, Any] | None:
    """The checked promotion rule of a spec (None without an alias): the alias, one of `metrics`
    (val_accuracy by default), the threshold, and the direction (`better_when_higher(metric)`
    unless the spec says)."""
    if not promo.get("alias"):
        return None
    names.alias_name(str(promo["alias"]), f"{field}.alias")
    metric = str(promo.get("metric") or "val_accuracy")
    if metric not in metrics:
        raise InvalidArgument(f"{field}.metric: one of {', '.join(metrics)}")
    return {
        "alias": str(promo["alias"]),
        "metric": metric,
        "threshold": _num(float(promo.get("threshold") or 0.0), f"{field}.threshold", -1e12, 1e12),
        "higher_is_better": bool(promo.get("higher_is_better", better_when_higher(metric))),
    }


def _num(value: float, field: str, lo: float, hi: float) -> float:
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidArgument(f"{field}: must be in [{lo}, {hi}]")
    return float(value)


def _int(value: int, field: str, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise InvalidArgument(f"{field}: must be an integer in [{lo}, {hi}]")
    return int(value)


def _finite(value: Any, field: str) -> None:
    """Refuse NaN and +-Inf anywhere: the resolved spec is stored and handed on as JSON, which has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"{field}: must be a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{field}.{str(key)[:40]}" if field else str(key)[:40])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _finite(item, f"{field}[{i}]")


def resolve(raw: dict[str, Any], *, data_root: Path, max_world_size: int, max_runtime: int) -> dict[str, Any]:
    """The resolved spec: defaults filled in, everything validated."""
    _finite(raw, "")
    model = raw.get("model") or {}
    dataset = raw.get("dataset") or {}
    info = datasets.describe(
        str(dataset.get("name", "")), str(dataset.get("path", "")), dict(dataset.get("args") or {}), data_root
    )

    model_name = str(model.get("name", ""))
    entry = architectures.entry(model_name, "model.name", "model")
    shape = list(info.input_shape)
    implied = plugins.within(
        plugins.timeout(),
        f"the defaults of architecture {model_name} ({entry.origin.label})",
        lambda: entry.plugin.defaults(info.input_shape, info.num_classes),
    )
    if not isinstance(implied, dict):
        raise FailedPrecondition(f"architecture {model_name} ({entry.origin.label}): defaults() must return a dict")
    args = {"num_classes": info.num_classes, **implied, **dict(model.get("args") or {})}
    if args.get("num_classes") != info.num_classes:
        raise InvalidArgument(f"model.args.num_classes: the data set has {info.num_classes} classes")
    args, text = text_spec.resolve(entry, info, args, raw, data_root)
    architecture = {
        "name": model_name,
        "args": args,
        "input_shape": shape,
        "labels": list(info.labels),
    }
    # Parsing validates every argument against the entry's model.
    parsed = architectures.parse(architecture)
    freeze_backbone = bool(raw.get("freeze_backbone"))
    pretrained = resolve_pretrained(raw.get("pretrained"), freeze_backbone, parsed, data_root)

    opt = raw.get("optimizer") or {}
    opt_name = str(opt.get("name") or "sgd")
    if opt_name not in OPTIMIZERS:
        raise InvalidArgument(f"optimizer.name: unknown optimizer '{opt_name[:40]}' (sgd, adam, adamw)")
    optimizer = {
        "name": opt_name,
        "lr": _num(float(opt.get("lr") or OPTIMIZERS[opt_name]), "optimizer.lr", 1e-8, 10.0),
        "momentum": _num(float(opt.get("momentum") or (0.9 if opt_name == "sgd" else 0.0)), "optimizer.momentum", 0, 1),
        "weight_decay": _num(float(opt.get("weight_decay") or 0.0), "optimizer.weight_decay", 0, 1),
    }
    sched = raw.get("schedule") or {}
    sched_name = str(sched.get("name") or "none")
    if sched_name not in SCHEDULES:
        raise InvalidArgument(f"schedule.name: unknown schedule '{sched_name[:40]}' ({', '.join(SCHEDULES)})")
    schedule = {
        "name": sched_name,
        "step_size": _int(int(sched.get("step_size") or 1), "schedule.step_size", 1, 10_000),
        "gamma": _num(float(sched.get("gamma") or 0.1), "schedule.gamma", 1e-6, 1.0),
    }

    epochs = _int(int(raw.get("epochs") or 10), "epochs", 1, 10_000)
    early = raw.get("early_stopping") or {}
    early_stopping = None
    if early.get("metric"):
        metric = str(early["metric"])
        if metric not in METRICS:
            raise InvalidArgument(f"early_stopping.metric: one of {', '.join(METRICS)}")
        early_stopping = {
            "metric": metric,
            "patience": _int(int(early.get("patience") or 3), "early_stopping.patience", 1, 10_000),
            "higher_is_better": bool(early.get("higher_is_better", higher_is_better(metric))),
            "min_delta": _num(float(early.get("min_delta") or 0.0), "early_stopping.min_delta", 0, 1e6),
        }

    register_as = str(raw.get("register_as") or "")
    if register_as:
        names.model_name(register_as, "register_as")
    promo = raw.get("promotion") or {}
    if promo.get("alias") and not register_as:
        raise InvalidArgument("promotion: needs register_as")
    promotion = promotion_rule(promo, "promotion", METRICS, higher_is_better)

    description = names.text_value(str(raw.get("description") or ""), "description")
    tags = names.tags(dict(raw.get("tags") or {}))
    split = float(raw.get("validation_split") or 0.1)
    return {
        "model": {"name": model_name, "args": args},
        "dataset": {"name": info.name, "path": info.path, "args": info.args},
        "architecture": architecture,
        "optimizer": optimizer,
        "schedule": schedule,
        "epochs": epochs,
        "batch_size": _int(int(raw.get("batch_size") or 64), "batch_size", 1, 65_536),
        "validation_split": _num(split, "validation_split", 0.01, 0.5),
        "seed": _int(int(raw.get("seed") or 0), "seed", 0, 2**31 - 1),
        "world_size": _int(int(raw.get("world_size") or 1), "world_size", 1, max_world_size),
        "max_runtime_seconds": _int(
            int(raw.get("max_runtime_seconds") or max_runtime), "max_runtime_seconds", 1, max_runtime
        ),
        "early_stopping": early_stopping,
        "register_as": register_as,
        "promotion": promotion,
        "pretrained": pretrained,
        "freeze_backbone": freeze_backbone,
        "max_retries": _int(int(raw.get("max_retries", 2) or 0), "max_retries", 0, 10),
        "threads": _int(int(raw.get("threads") or 0), "threads", 0, 256),
        "description": description,
        "tags": tags,
        **({"text": text} if text else {}),
    }


def fingerprint(resolved: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()
