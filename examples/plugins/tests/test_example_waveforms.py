"""waveforms: seeded, balanced, of the declared shape, and loaded through maas's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from maas_example_plugin.waveforms import LABELS, WaveformsArgs, generate

from maas.common.errors import InvalidArgument
from maas.trainer import datasets


def test_the_same_seed_gives_the_same_rows_and_another_seed_others() -> None:
    args = WaveformsArgs(num_samples=80, length=32)
    x, y = generate(args, seed=1)
    x2, y2 = generate(args, seed=1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, generate(args, seed=2)[0])
    assert x.shape == (80, 1, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [20, 20, 20, 20]


def test_maas_describes_loads_and_fingerprints_it(tmp_path: Path) -> None:
    info = datasets.describe("waveforms", "", {"num_samples": 100.0, "length": 48}, tmp_path)
    assert (info.input_shape, info.labels, info.origin) == ((1, 48), LABELS, "maas-example-plugin 0.1.0")
    assert info.args == {"num_samples": 100, "length": 48, "noise": 0.3}
    loaded = datasets.load(info, tmp_path, allow_download=False, seed=5)
    assert tuple(loaded.x.shape) == (100, 1, 48) and loaded.y.max() == 3
    assert datasets.fingerprint(info, tmp_path, 5) == (
        'maas-example-plugin==0.1.0:waveforms:{"length":48,"noise":0.3,"num_samples":100},seed=5'
    )
    with pytest.raises(InvalidArgument, match=r"dataset\.args\.length: "):
        datasets.describe("waveforms", "", {"length": 8}, tmp_path)
