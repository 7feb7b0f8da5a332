"""waveforms: generated signals of four shapes (sine, square, sawtooth, pulse), one per class.

Each row is one channel of `length` samples: a waveform with a random
frequency (2 to 6 cycles over the window), phase and amplitude, plus Gaussian
noise. Everything is drawn from numpy's generator seeded with the job's seed,
so the same job sees the same rows; nothing is read or downloaded.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from maas.common.plugins import DatasetArgs, DatasetPlugin, DatasetShape, DataSource, LoadedData, LoadOptions

LABELS = ("sine", "square", "sawtooth", "pulse")


class WaveformsArgs(DatasetArgs):
    num_samples: int = Field(1200, ge=40, le=200_000, description="Rows generated (as many of each shape).")
    length: int = Field(64, ge=16, le=4096, description="Samples per row.")
    noise: float = Field(0.3, ge=0.0, le=2.0, description="Standard deviation of the added Gaussian noise.")


def generate(args: WaveformsArgs, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [N, 1, length] and y int64 [N], the same for the same arguments and seed."""
    rng = np.random.default_rng(seed)
    n = args.num_samples
    y = np.arange(n) % len(LABELS)
    rng.shuffle(y)
    t = np.arange(args.length) / args.length
    cycles = rng.uniform(2.0, 6.0, size=(n, 1))
    phase = rng.uniform(0.0, 1.0, size=(n, 1))
    amplitude = rng.uniform(0.5, 1.5, size=(n, 1))
    u = (cycles * t + phase) % 1.0  # position within each cycle, 0..1
    shapes = np.stack(
        [
            np.sin(2 * np.pi * u),
            np.where(u < 0.5, 1.0, -1.0),
            2.0 * u - 1.0,
            np.where(u < 0.2, 1.6, -0.4),  # a 20% duty cycle, zero mean
        ]
    )
    x = amplitude * shapes[y, np.arange(n)] + rng.normal(0.0, args.noise, size=(n, args.length))
    return x.astype(np.float32)[:, None, :], y.astype(np.int64)


class Waveforms(DatasetPlugin[WaveformsArgs]):
    name = "waveforms"
    description = "Generated 1-channel signals: sine, square, sawtooth and pulse waves with noise (seeded)."
    Args = WaveformsArgs

    def describe(self, args: WaveformsArgs, source: DataSource) -> DatasetShape:
        return DatasetShape((1, args.length), LABELS)

    def load(self, args: WaveformsArgs, shape: DatasetShape, source: DataSource, options: LoadOptions) -> LoadedData:
        x, y = generate(args, options.seed)
        return LoadedData(x, y)
