"""How the CLI prints: tables for people, JSON for scripts, one line for errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from maas.common import errors
from maas.common.structs import message_dict

# A message as JSON-ready data (proto field names, defaults, 64-bit integers as numbers).
to_dict = message_dict


def print_json(data: Any, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "(none)") -> None:
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        print(empty)
        return
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    items = [(k, v) for k, v in pairs if v not in (None, "")]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        print(f"{key + ':':<{width + 1}} {value}")


def when(ts: Any) -> str:
    """A protobuf Timestamp as local 'YYYY-MM-DD HH:MM:SS' ('' when unset)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return ""
    return datetime.fromtimestamp(ts.seconds, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def metrics_text(metrics: dict[str, float], keys: Sequence[str] = ()) -> str:
    chosen = [k for k in keys if k in metrics] if keys else sorted(metrics)
    return "  ".join(f"{k} {metrics[k]:.4g}" for k in chosen)


def kind_of(exc: errors.MaasError) -> str:
    """'NotFound' -> 'not found'."""
    name = type(exc).__name__
    return "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()


def error_line(exc: errors.MaasError) -> str:
    message = " ".join(str(exc.message).split())
    if isinstance(exc, errors.Unavailable):
        return f"unavailable: {message} (is the suite running? `maas up` starts it)"
    return f"{kind_of(exc)}: {message}"
