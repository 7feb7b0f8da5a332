"""Which way a metric improves: the one rule for the trainer's defaults and the CLI's ordering."""

from __future__ import annotations

LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "perplexity", "latency", "duration")
"""A metric whose name contains one of these (any case) is best when lowest."""


def lower_is_better(metric: str) -> bool:
    """Losses, errors and latencies are best when lowest; accuracy, F1, AUC and the rest when highest."""
    name = metric.lower()
    return any(word in name for word in LOWER_IS_BETTER)


def higher_is_better(metric: str) -> bool:
    return not lower_is_better(metric)
