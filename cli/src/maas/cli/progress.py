"""The live view of a training job: epoch and step bars, loss, metrics, samples/s, ETA.

On a terminal a block of lines at the bottom is redrawn in place while log
lines and state changes scroll above it; anywhere else (a pipe, a CI log)
each state change, log line and epoch is printed once, as plain text.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from maas.client.trainer import state_name
from maas.v1 import trainer_pb2 as pb

REDRAW_SECONDS = 0.1
KEY_METRICS = ("val_accuracy", "val_loss", "train_loss", "train_accuracy")


def duration(seconds: float) -> str:
    if seconds <= 0 or seconds != seconds:
        return "-"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def bar(fraction: float, width: int, unicode: bool = True) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full, empty = ("█", "░") if unicode else ("#", "-")
    filled = round(fraction * width)
    return full * filled + empty * (width - filled)


@dataclass
class JobProgress:
    """What the view knows of the job, updated event by event."""

    job_id: str
    title: str = ""
    state: str = "QUEUED"
    phase: str = ""
    reason: str = ""
    attempt: int = 0
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    loss: float | None = None
    samples_per_second: float = 0.0
    eta_seconds: float = 0.0
    epoch_metrics: dict[str, float] = field(default_factory=dict)
    best: tuple[float, int] | None = None
    last_seq: int = 0

    def apply(self, event: pb.JobEvent) -> None:
        self.last_seq = max(self.last_seq, event.seq)
        kind = event.WhichOneof("kind")
        if kind == "state":
            self.state = state_name(event.state.state)
            self.phase = event.state.phase
            self.reason = event.state.reason
            self.attempt = event.state.attempt or self.attempt
        elif kind == "step":
            s = event.step
            self.epoch, self.step, self.steps_per_epoch = s.epoch, s.step, s.steps_per_epoch
            self.loss = s.loss
            self.samples_per_second = s.samples_per_second or self.samples_per_second
            self.eta_seconds = s.eta_seconds
        elif kind == "epoch":
            e = event.epoch
            self.epoch, self.epochs = e.epoch, e.epochs or self.epochs
            self.step = self.steps_per_epoch
            self.epoch_metrics = dict(e.metrics)
            self.samples_per_second = e.samples_per_second or self.samples_per_second
            self.eta_seconds = e.eta_seconds
            accuracy = e.metrics.get("val_accuracy")
            if accuracy is not None and (self.best is None or accuracy > self.best[0]):
                self.best = (accuracy, e.epoch)

    def lines(self, width: int = 80, unicode: bool = True) -> list[str]:
        bar_width = max(10, min(40, width - 42))
        head = f"job {self.job_id}  {self.title}  {self.state}"
        if self.phase and self.phase.lower() != self.state.lower():
            head += f" ({self.phase})"
        if self.attempt > 1:
            head += f"  attempt {self.attempt}"
        epochs = max(self.epochs, self.epoch, 1)
        done_epochs = self.epoch - 1 + (self.step / self.steps_per_epoch if self.steps_per_epoch else 0)
        epoch_line = (
            f"epoch {self.epoch:>{len(str(epochs))}}/{epochs} [{bar(done_epochs / epochs, bar_width, unicode)}]"
            f" {100 * done_epochs / epochs:3.0f}%  ETA {duration(self.eta_seconds)}"
        )
        steps = max(self.steps_per_epoch, 1)
        step_line = f"step  {self.step:>{len(str(steps))}}/{steps} [{bar(self.step / steps, bar_width, unicode)}]"
        if self.loss is not None:
            step_line += f"  loss {self.loss:.4f}"
        if self.samples_per_second:
            step_line += f"  {self.samples_per_second:,.0f} samples/s"
        out = [head[:width], epoch_line[:width], step_line[:width]]
        if self.epoch_metrics:
            shown = [k for k in KEY_METRICS if k in self.epoch_metrics] or sorted(self.epoch_metrics)
            parts = [f"{k} {self.epoch_metrics[k]:.4f}" for k in shown]
            if self.best is not None:
                parts.insert(1, f"(best {self.best[0]:.4f} at epoch {self.best[1]})")
            text = "  ".join(parts)
            while len(text) > width and len(parts) > 1:  # drop the least important first
                parts.pop()
                text = "  ".join(parts)
            out.append(text[:width])
        return out


class ProgressView:
    def __init__(self, job_id: str, title: str = "", stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        encoding = (getattr(self.stream, "encoding", None) or "").lower()
        self.unicode = "utf" in encoding
        self.progress = JobProgress(job_id, title)
        self._drawn = 0
        self._last_draw = 0.0

    def _width(self) -> int:
        import shutil

        return max(40, shutil.get_terminal_size((100, 24)).columns - 1)

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        lines = self.progress.lines(self._width(), self.unicode)
        self.stream.write("\n".join(lines) + "\n")
        self._drawn = len(lines)
        self._last_draw = time.monotonic()
        self.stream.flush()

    def say(self, text: str) -> None:
        """A line that stays (logs, state changes), printed above the live block."""
        if self.live:
            self._clear()
            self.stream.write(text + "\n")
            self._draw()
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def on_event(self, event: pb.JobEvent) -> None:
        p = self.progress
        kind = event.WhichOneof("kind")
        p.apply(event)
        if kind == "state":
            detail = f" ({event.state.phase})" if event.state.phase else ""
            reason = f": {event.state.reason}" if event.state.reason else ""
            self.say(f"[{state_name(event.state.state)}]{detail}{reason}")
        elif kind == "log":
            self.say(f"  {event.log.message}")
        elif kind == "epoch":
            if self.live:
                self._redraw(force=True)
            else:
                metrics = "  ".join(f"{k} {v:.4f}" for k, v in sorted(event.epoch.metrics.items()))
                rate = f"  {event.epoch.samples_per_second:,.0f} samples/s" if event.epoch.samples_per_second else ""
                eta = f"  ETA {duration(event.epoch.eta_seconds)}" if event.epoch.eta_seconds else ""
                self.say(f"epoch {event.epoch.epoch}/{event.epoch.epochs}  {metrics}{rate}{eta}")
        elif kind == "step" and self.live:
            self._redraw()

    def _redraw(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_draw < REDRAW_SECONDS:
            return
        self._clear()
        self._draw()

    def reconnecting(self, error: Exception, delay: float) -> None:
        message = " ".join(str(getattr(error, "message", error)).split())[:160]
        self.say(
            f"  connection to the trainer lost ({message}); resuming from event {self.progress.last_seq} "
            f"in {delay:.1f}s"
        )

    def close(self) -> None:
        if self.live:
            self._clear()
            self._draw()
