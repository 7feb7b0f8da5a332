"""Wiring of one inference process: registry client, manager, converger, follower, servicer, HTTP face."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

from grpc import aio
from prometheus_client import CollectorRegistry

from maas.common.auth import TokenTable
from maas.common.clients.registry import RegistryClient
from maas.common.server import Health, security_of
from maas.inference.convergence import Converger
from maas.inference.dataplane import DataPlane
from maas.inference.follower import RegistryFollower
from maas.inference.http_app import OipHttp
from maas.inference.http_server import HttpServer
from maas.inference.manager import ModelManager
from maas.inference.metrics import InferenceMetrics
from maas.inference.servicer import InferenceServicer
from maas.inference.settings import InferenceSettings, http_settings, replica_id
from maas.inference.shadow import ShadowMetrics
from maas.inference.statistics import Statistics
from maas.oip import grpc_service_pb2, grpc_service_pb2_grpc

log = logging.getLogger("maas.inference")

SERVICE_NAME = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class InferenceApp:
    """Built inside the running event loop (it opens a gRPC channel to the registry)."""

    service_names: Sequence[str] = (SERVICE_NAME,)

    def __init__(self, settings: InferenceSettings, metrics_registry: CollectorRegistry | None = None) -> None:
        import torch

        self.settings = settings
        torch.set_num_threads(settings.intra_op_threads)
        self.statistics = Statistics()
        self.registry = RegistryClient(settings.registry_channel())
        self.manager = ModelManager(settings, self.registry, self.statistics)
        if metrics_registry is not None:
            self.manager.metrics = InferenceMetrics(
                metrics_registry, self.statistics, self.manager.pending, self.manager.states
            )
        self.converger = Converger(self.manager, settings, replica_id(settings))
        shadow_metrics = ShadowMetrics(metrics_registry) if metrics_registry is not None else None
        self.plane = DataPlane(self.manager, self.statistics, self.converger, shadow_metrics)
        self.follower = RegistryFollower(
            self.converger,
            initial=settings.reconnect_initial_seconds,
            maximum=settings.reconnect_max_seconds,
            resync=settings.resync_seconds,
        )
        self.http: HttpServer | None = None

    def register(self, server: aio.Server) -> None:
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.plane), server)

    async def start(self, health: Health) -> None:
        if self.settings.http:
            await self._start_http()
        # Deployments, MAAS_INFERENCE_MODELS and the default policy, loaded before the replica says it is ready.
        await self.converger.start()
        if self.settings.follow:
            self.follower.start()
        # Everything allocated so far (torch, models, modules) lives as long as the process:
        # keep it out of the collector's scans, which otherwise show up on the request path.
        gc.collect()
        gc.freeze()
        self.plane.ready = True
        await health.set(SERVICE_NAME, True)

    async def _start_http(self) -> None:
        """The HTTP/REST face: bound before the models load (live at once, ready with gRPC)."""
        settings = http_settings(self.settings)
        # The gRPC port's rule for this address too (refused unprotected off loopback), and its tokens.
        tokens, _ = security_of(settings)
        routes = OipHttp(self.plane, TokenTable(tokens) if tokens else None, settings.max_message_bytes)
        self.http = HttpServer(
            routes.app(),
            settings.host,
            settings.http_port,
            grace_seconds=settings.grace_seconds,
            access_log=settings.access_log,
            tls_cert_file=settings.tls_cert_file,
            tls_key_file=settings.tls_key_file,
            tls_client_ca_file=settings.tls_client_ca_file,
        )
        await self.http.start()
        log.info("inference http listening on %s", self.http.url)
        print(f"inference http listening on {self.http.url}", flush=True)

    async def stop(self) -> None:
        self.plane.ready = False
        if self.http is not None:
            await self.http.stop()
        await self.follower.stop()
        await self.converger.stop()
        await self.plane.shadow.close(cancel=True)  # copies are never waited for
        await self.manager.close()
        await self.registry.close()
