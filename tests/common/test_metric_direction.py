"""The one rule for which way a metric improves (the trainer's defaults, the CLI's ordering)."""

from __future__ import annotations

import pytest

from maas.common.metric_direction import higher_is_better, lower_is_better

LOWER = ("val_loss", "train_loss", "Val_Loss", "error_rate", "top1_error", "val_mse", "mae", "rmse", "perplexity")
LATENCY = ("latency_ms", "p99_latency", "Latency", "step_duration")
HIGHER = ("val_accuracy", "train_accuracy", "accuracy", "f1", "auc", "precision", "recall", "samples_per_second")


@pytest.mark.parametrize("metric", LOWER + LATENCY)
def test_losses_errors_and_latencies_are_best_lowest(metric: str) -> None:
    assert lower_is_better(metric)
    assert not higher_is_better(metric)


@pytest.mark.parametrize("metric", HIGHER)
def test_accuracy_and_the_rest_are_best_highest(metric: str) -> None:
    assert higher_is_better(metric)
    assert not lower_is_better(metric)
