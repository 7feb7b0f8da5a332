"""Ten times the measured capacity: the excess is refused with RESOURCE_EXHAUSTED, and nothing else breaks.

The capacity of the served (slow, one-row) model is measured first with a short
closed loop; then an open loop offers ten times that rate from 32 connections.
Every call gets OK with the exact answer, or RESOURCE_EXHAUSTED (never
UNAVAILABLE, DEADLINE_EXCEEDED or INTERNAL); both occur; the server's RSS
afterwards is within a small margin of before; and a burst of ordinary
requests right after all succeed. How fast the refusals come back and the p99
of admitted requests are measured by bench/overload.py, not asserted here.
"""

from __future__ import annotations

import collections
from pathlib import Path

import grpc
import numpy as np

from tests.security import inference_support as isup
from tests.security import overload

RSS_MARGIN = 48 * 1024 * 1024


async def test_ten_times_capacity_gets_resource_exhausted_and_the_service_recovers(tmp_path: Path) -> None:
    registry, proc = overload.start(tmp_path)
    try:
        body, x = overload.request()
        capacity, measured = await overload.closed_loop(proc.address, body, concurrency=4, requests=60)
        assert {o.code for o in measured} == {grpc.StatusCode.OK}
        rss_before = isup.rss_bytes(proc.popen.pid)

        rate = 10 * capacity
        outcomes = await overload.open_loop(proc.address, body, rate=rate, count=int(rate * 3), connections=32)
        codes = collections.Counter(o.code for o in outcomes)
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert codes[grpc.StatusCode.OK] > 0 and codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0, codes
        for o in outcomes:
            if o.code == grpc.StatusCode.OK:
                assert np.array_equal(overload.output_of(o.reply), x)
        assert isup.rss_bytes(proc.popen.pid) < rss_before + RSS_MARGIN

        _, after = await overload.closed_loop(proc.address, body, concurrency=4, requests=40)
        assert [o.code for o in after] == [grpc.StatusCode.OK] * 40
        assert all(np.array_equal(overload.output_of(o.reply), x) for o in after)
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]
        registry.stop()
