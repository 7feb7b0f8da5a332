"""HTTP/2 keepalive, one pair of numbers for both ends of every internal channel.

A client pings an idle connection so that a dead peer (a restarted service, a
dropped NAT entry) is noticed before the next call waits out its deadline. A
gRPC server counts pings that come sooner than it permits as strikes and, past
two, closes the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings",
failing the streams on it. Its defaults permit one ping per 5 minutes during
calls and none at all without one, so a client pinging every 30 s was cut off.
Clients (`ChannelConfig.open`) and servers (`start_server`) take their options
from the same `Keepalive`, which refuses a client interval below the server's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Keepalive:
    """Clients ping every `ping_every_ms`; servers accept pings `permit_every_ms` apart, with or without calls."""

    ping_every_ms: int = 30_000
    permit_every_ms: int = 10_000
    # How long a client waits for a ping's answer before it declares the connection dead.
    ping_timeout_ms: int = 20_000

    def __post_init__(self) -> None:
        if self.ping_every_ms < self.permit_every_ms:
            raise ValueError("clients would ping more often than servers permit (too_many_pings)")

    def client_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.keepalive_time_ms", self.ping_every_ms),
            ("grpc.keepalive_timeout_ms", self.ping_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            # 0: keep pinging an idle stream (the default stops after two pings without data).
            ("grpc.http2.max_pings_without_data", 0),
        ]

    def server_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.keepalive_permit_without_calls", 1),
            # The least time between two pings the server accepts (C-core's MIN_RECV_PING_INTERVAL_WITHOUT_DATA).
            ("grpc.http2.min_ping_interval_without_data_ms", self.permit_every_ms),
        ]


KEEPALIVE = Keepalive()
