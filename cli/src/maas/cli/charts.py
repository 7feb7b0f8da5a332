"""Line charts in the terminal (Braille dots: 2x4 per character) and as PNG files (matplotlib)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

# Braille dot bits by (column, row) inside one character cell.
DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def text_chart(
    steps: Sequence[float],
    values: Sequence[float],
    *,
    width: int = 60,
    height: int = 12,
    title: str = "",
    unicode: bool = True,
) -> list[str]:
    """The series as lines of text: y labels on the left, the first and last step below."""
    points = [(float(s), float(v)) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
    if not points:
        return [f"{title}: no points" if title else "no points"]
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    cols, rows = (width * 2, height * 4) if unicode else (width, height)
    grid = [[False] * cols for _ in range(rows)]

    def to_dot(x: float, y: float) -> tuple[int, int]:
        cx = 0 if x1 == x0 else round((x - x0) / (x1 - x0) * (cols - 1))
        cy = round((y1 - y) / (y1 - y0) * (rows - 1))
        return cx, cy

    dots = [to_dot(x, y) for x, y in points]
    for (ax, ay), (bx, by) in itertools.pairwise(dots):
        n = max(abs(bx - ax), abs(by - ay), 1)
        for i in range(n + 1):
            grid[round(ay + (by - ay) * i / n)][round(ax + (bx - ax) * i / n)] = True
    for cx, cy in dots:
        grid[cy][cx] = True

    if unicode:
        text_rows = []
        for r in range(height):
            line = []
            for c in range(width):
                code = 0
                for dx in range(2):
                    for dy in range(4):
                        if grid[r * 4 + dy][c * 2 + dx]:
                            code |= DOTS[dx][dy]
                line.append(chr(0x2800 + code) if code else " ")
            text_rows.append("".join(line))
    else:
        text_rows = ["".join("*" if cell else " " for cell in row) for row in grid]

    labels = {0: _fmt(y1), height - 1: _fmt(y0), (height - 1) // 2: _fmt((y0 + y1) / 2)}
    pad = max(len(s) for s in labels.values())
    out = [title] if title else []
    for r, row in enumerate(text_rows):
        out.append(f"{labels.get(r, ''):>{pad}} ┤{row}" if unicode else f"{labels.get(r, ''):>{pad}} |{row}")
    axis = ("└" + "─" * width) if unicode else ("+" + "-" * width)
    out.append(" " * pad + " " + axis)
    left, right = _fmt(x0), _fmt(x1)
    out.append(" " * (pad + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    return out


def png_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str = "") -> None:
    """One subplot per series, saved as a PNG (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    n = max(1, len(series))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.8 * n), squeeze=False)
    for ax, (key, (xs, ys)) in zip(axes[:, 0], series.items(), strict=False):
        ax.plot(list(xs), list(ys), marker="o" if len(xs) <= 50 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("epoch" if key not in ("loss", "samples_per_second") else "step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
