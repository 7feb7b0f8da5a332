"""Client keepalive and the servers' ping policy agree: no GOAWAY too_many_pings on a long idle stream."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maas.common.clients.base import ChannelConfig
from maas.common.keepalive import Keepalive
from maas.common.server import Health, start_server
from maas.common.settings import ServerSettings

SERVICE = "maas.test.Idle"
# The production pair scaled down 100 times: a client pinging every 300 ms against a server
# left at gRPC's defaults collects its third strike within a second and is sent GOAWAY.
FAST = Keepalive(ping_every_ms=300, permit_every_ms=100, ping_timeout_ms=5_000)
PINGS = 10


class IdleApp:
    service_names: Sequence[str] = (SERVICE,)
    health: Health

    def register(self, server: aio.Server) -> None:
        pass

    async def start(self, health: Health) -> None:
        self.health = health
        await health.set_all(True)

    async def stop(self) -> None:
        pass


async def record_states(channel: aio.Channel, states: list[grpc.ChannelConnectivity]) -> None:
    state = channel.get_state(try_to_connect=True)
    states.append(state)
    while True:
        await channel.wait_for_state_change(state)
        state = channel.get_state()
        states.append(state)


async def test_idle_stream_and_idle_channel_outlive_many_pings() -> None:
    app = IdleApp()
    running = await start_server(ServerSettings(port=0, metrics_port=0), app, keepalive=FAST)
    channel = ChannelConfig(running.address, keepalive=FAST).open()
    states: list[grpc.ChannelConnectivity] = []
    watcher = asyncio.ensure_future(record_states(channel, states))
    try:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        # A stream with nothing to say for many ping intervals, like WatchEvents between jobs.
        await asyncio.sleep(PINGS * FAST.ping_every_ms / 1000)
        await app.health.set(SERVICE, False)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()

        # A channel without any call for as long (the trainer between two jobs).
        await asyncio.sleep(PINGS * FAST.ping_every_ms / 1000)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Once connected, the channel never lost its connection (a GOAWAY would show as IDLE or failure).
        assert states[-1] == grpc.ChannelConnectivity.READY
        assert states.count(grpc.ChannelConnectivity.READY) == 1, states
        assert grpc.ChannelConnectivity.TRANSIENT_FAILURE not in states, states
    finally:
        watcher.cancel()
        await channel.close()
        await running.stop(0)
