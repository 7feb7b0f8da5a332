"""Typed client of maas.v1.RegistryService (async, plus a blocking facade)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import struct_pb2

from maas.common import errors
from maas.common.clients.base import AsyncClient, ChannelConfig, to_error
from maas.common.digest import sha256_file
from maas.common.retry import RetryPolicy
from maas.v1 import common_pb2, registry_pb2_grpc
from maas.v1 import registry_pb2 as pb

CHUNK = 1024 * 1024
T = TypeVar("T")


class RegistryClient(AsyncClient):
    def __init__(self, config: ChannelConfig, retry: RetryPolicy | None = None) -> None:
        super().__init__(config, retry)
        self.stub = registry_pb2_grpc.RegistryServiceStub(self.channel)

    async def __aenter__(self) -> RegistryClient:
        return self

    # ---------------------------------------------------------------- models

    async def create_model(self, name: str, description: str = "", tags: Mapping[str, str] | None = None) -> pb.Model:
        req = pb.CreateModelRequest(name=name, description=description, tags=dict(tags or {}))
        return await self.call(self.stub.CreateModel, req, idempotent=False)

    async def ensure_model(self, name: str, description: str = "") -> pb.Model:
        """Get the model, creating it if needed (a lost race is fine)."""
        try:
            return await self.get_model(name)
        except errors.NotFound:
            pass
        try:
            return await self.create_model(name, description)
        except errors.AlreadyExists:
            return await self.get_model(name)

    async def get_model(self, name: str) -> pb.Model:
        return await self.call(self.stub.GetModel, pb.GetModelRequest(name=name), idempotent=True)

    async def list_models(
        self, name_prefix: str = "", page_size: int = 0, page_token: str = ""
    ) -> pb.ListModelsResponse:
        req = pb.ListModelsRequest(
            name_prefix=name_prefix, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
        )
        return await self.call(self.stub.ListModels, req, idempotent=True)

    async def delete_model(self, name: str, force: bool = False) -> None:
        await self.call(self.stub.DeleteModel, pb.DeleteModelRequest(name=name, force=force), idempotent=False)

    # -------------------------------------------------------------- versions

    async def create_version(
        self,
        model: str,
        *,
        format: int,
        architecture: Mapping[str, Any] | None = None,
        signature: common_pb2.Signature | None = None,
        run_id: str = "",
        description: str = "",
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        lineage: pb.Lineage | None = None,
    ) -> pb.ModelVersion:
        arch = struct_pb2.Struct()
        arch.update(dict(architecture or {}))
        req = pb.CreateVersionRequest(
            model=model,
            format=format,  # type: ignore[arg-type]
            architecture=arch,
            signature=signature,
            run_id=run_id,
            description=description,
            tags=dict(tags or {}),
            metrics=dict(metrics or {}),
            lineage=lineage,
        )
        return await self.call(self.stub.CreateVersion, req, idempotent=False)

    async def get_version(self, model: str, version: int) -> pb.ModelVersion:
        return await self.call(
            self.stub.GetVersion, pb.GetVersionRequest(model=model, version=version), idempotent=True
        )

    async def resolve(self, ref: str) -> pb.ModelVersion:
        return await self.call(self.stub.ResolveVersion, pb.ResolveVersionRequest(ref=ref), idempotent=True)

    async def list_versions(self, request: pb.ListVersionsRequest) -> pb.ListVersionsResponse:
        return await self.call(self.stub.ListVersions, request, idempotent=True)

    async def set_version_tags(self, model: str, version: int, tags: Mapping[str, str]) -> pb.ModelVersion:
        # Setting the same tags twice lands once.
        req = pb.UpdateVersionRequest(model=model, version=version, set_tags=dict(tags))
        return await self.call(self.stub.UpdateVersion, req, idempotent=True)

    async def fail_version(self, model: str, version: int, reason: str) -> pb.ModelVersion:
        req = pb.FailVersionRequest(model=model, version=version, reason=reason)
        return await self.call(self.stub.FailVersion, req, idempotent=False)

    async def set_alias(self, model: str, alias: str, version: int) -> pb.Alias:
        req = pb.SetAliasRequest(model=model, alias=alias, version=version)
        # Setting an alias to a fixed version is idempotent: the same request twice lands once.
        return await self.call(self.stub.SetAlias, req, idempotent=True)

    async def delete_alias(self, model: str, alias: str) -> None:
        await self.call(self.stub.DeleteAlias, pb.DeleteAliasRequest(model=model, alias=alias), idempotent=False)

    # ------------------------------------------------------------------ runs

    async def create_run(self, name: str = "", job_id: str = "", params: Mapping[str, str] | None = None) -> pb.Run:
        req = pb.CreateRunRequest(name=name, job_id=job_id, params=dict(params or {}))
        return await self.call(self.stub.CreateRun, req, idempotent=False)

    async def get_run(self, run_id: str) -> pb.Run:
        return await self.call(self.stub.GetRun, pb.GetRunRequest(run_id=run_id), idempotent=True)

    async def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        # Params are write-once per key, so a retried call cannot change anything.
        req = pb.LogParamsRequest(run_id=run_id, params=dict(params))
        await self.call(self.stub.LogParams, req, idempotent=True)

    async def log_metrics(self, run_id: str, series: Iterable[pb.MetricSeries]) -> int:
        req = pb.LogMetricsRequest(run_id=run_id, series=list(series))
        resp = await self.call(self.stub.LogMetrics, req, idempotent=False)
        return int(resp.points_written)

    async def finish_run(self, run_id: str, status: int) -> pb.Run:
        req = pb.FinishRunRequest(run_id=run_id, status=status)  # type: ignore[arg-type]
        return await self.call(self.stub.FinishRun, req, idempotent=True)

    async def metric_history(
        self, run_id: str, key: str, *, min_step: int = 0, max_step: int = 0, page_size: int = 0
    ) -> pb.MetricSeries:
        """Every point of one metric, following pages."""
        out = pb.MetricSeries(key=key)
        token = ""
        while True:
            req = pb.GetMetricHistoryRequest(
                run_id=run_id,
                key=key,
                min_step=min_step,
                max_step=max_step,
                page=common_pb2.PageRequest(page_size=page_size, page_token=token),
            )
            resp = await self.call(self.stub.GetMetricHistory, req, idempotent=True)
            out.steps.extend(resp.series.steps)
            out.values.extend(resp.series.values)
            out.timestamps_ms.extend(resp.series.timestamps_ms)
            token = resp.next_page_token
            if not token:
                return out

    # ------------------------------------------------------------- artifacts

    async def upload_artifact(
        self,
        model: str,
        version: int,
        path: Path,
        *,
        format: int = 0,
        timeout: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pb.ModelVersion:
        """Stream the file (its sha256 computed first: the registry checks it); `progress(sent, total)`
        is called with the bytes sent so far, from 0 to the size."""
        size = path.stat().st_size
        digest = await asyncio.to_thread(sha256_file, path)

        # grpc.aio only cancels the call when the request stream raises: keep what stopped it.
        stopped: list[Exception] = []

        async def messages() -> AsyncIterator[pb.UploadArtifactRequest]:
            header = pb.ArtifactHeader(model=model, version=version, size_bytes=size, sha256=digest, format=format)  # type: ignore[arg-type]
            yield pb.UploadArtifactRequest(header=header)
            sent = 0
            try:
                if progress is not None:
                    progress(0, size)
                with path.open("rb") as f:
                    while chunk := await asyncio.to_thread(f.read, CHUNK):
                        yield pb.UploadArtifactRequest(chunk=chunk)
                        sent += len(chunk)
                        if progress is not None:
                            progress(sent, size)
            except Exception as exc:  # noqa: BLE001 - re-raised below, in the caller's task
                stopped.append(exc)
                call.cancel()

        budget = timeout or max(self.config.timeout, 30.0 + size / (20 * 1024 * 1024))
        call = self.stub.UploadArtifact(messages(), timeout=budget, metadata=self._metadata)
        try:
            return await call
        except (Exception, asyncio.CancelledError) as exc:
            if stopped:
                raise stopped[0] from None
            if hasattr(exc, "code"):
                raise to_error(exc) from None  # type: ignore[arg-type]
            raise

    async def download_artifact(
        self, model: str, version: int, dest: Path, *, format: int = 0, timeout: float | None = None
    ) -> pb.ArtifactInfo:
        """Stream into `dest` atomically; the sha256 is checked before the file appears.

        `format` chooses the artifact (0, UNSPECIFIED: the version's primary one).
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        digest = hashlib.sha256()
        info: pb.ArtifactInfo | None = None
        call = self.stub.DownloadArtifact(
            pb.DownloadArtifactRequest(model=model, version=version, format=format),  # type: ignore[arg-type]
            timeout=timeout or max(self.config.timeout, 300.0),
            metadata=self._metadata,
        )
        try:
            with tmp.open("wb") as f:
                async for message in call:
                    if message.WhichOneof("part") == "info":
                        info = message.info
                    else:
                        digest.update(message.chunk)
                        await asyncio.to_thread(f.write, message.chunk)
                f.flush()
                os.fsync(f.fileno())
            if info is None or digest.hexdigest() != info.sha256:
                raise errors.DataLoss(f"downloaded artifact of {model}/{version} does not match its sha256")
            os.replace(tmp, dest)
            return info
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            if hasattr(exc, "code") and callable(exc.code):
                raise to_error(exc) from None  # type: ignore[arg-type]
            raise

    # ----------------------------------------------------------- deployments

    async def create_deployment(self, name: str, spec: pb.DeploymentSpec) -> pb.Deployment:
        req = pb.CreateDeploymentRequest(name=name, spec=spec)
        return await self.call(self.stub.CreateDeployment, req, idempotent=False)

    async def get_deployment(self, name: str) -> pb.Deployment:
        return await self.call(self.stub.GetDeployment, pb.GetDeploymentRequest(name=name), idempotent=True)

    async def list_deployments(
        self, name_prefix: str = "", page_size: int = 0, page_token: str = ""
    ) -> pb.ListDeploymentsResponse:
        req = pb.ListDeploymentsRequest(
            name_prefix=name_prefix, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
        )
        return await self.call(self.stub.ListDeployments, req, idempotent=True)

    async def update_deployment(
        self, name: str, spec: pb.DeploymentSpec, expected_generation: int = 0
    ) -> pb.Deployment:
        """Replace the spec; with `expected_generation`, Aborted if another change came first."""
        req = pb.UpdateDeploymentRequest(name=name, spec=spec, expected_generation=expected_generation)
        # A spec equal to the stored one changes nothing, so a retry after a lost answer lands once.
        return await self.call(self.stub.UpdateDeployment, req, idempotent=True)

    async def delete_deployment(self, name: str, expected_generation: int = 0) -> None:
        req = pb.DeleteDeploymentRequest(name=name, expected_generation=expected_generation)
        await self.call(self.stub.DeleteDeployment, req, idempotent=False)

    async def report_deployment_status(
        self, deployment: str, status: pb.ReplicaStatus, *, stopped: bool = False
    ) -> int:
        """Store what this replica serves of `deployment` (or remove it, `stopped`); the deployment's generation."""
        req = pb.ReportDeploymentStatusRequest(deployment=deployment, status=status, stopped=stopped)
        # The latest report replaces the one before: sending one twice changes nothing.
        resp = await self.call(self.stub.ReportDeploymentStatus, req, idempotent=True)
        return int(resp.generation)

    # ---------------------------------------------------------------- events

    async def watch_events(
        self,
        after_id: int = 0,
        *,
        from_latest: bool = False,
        models: Iterable[str] = (),
        types: Iterable[int] = (),
        deployments: Iterable[str] = (),
    ) -> AsyncIterator[pb.Event]:
        """One stream; callers reconnect with after_id = the last id they saw."""
        request = pb.WatchEventsRequest(
            after_id=after_id,
            from_latest=from_latest,
            models=list(models),
            types=list(types),  # type: ignore[arg-type]
            deployments=list(deployments),
        )
        call = self.stub.WatchEvents(request, metadata=self._metadata)
        async with contextlib.aclosing(self.stream(call)) as events:
            async for event in events:
                yield event


class BlockingRegistryClient:
    """The async client driven from synchronous code (training workers, scripts).

    It owns a private event loop on a daemon thread; every method blocks on
    the async client's coroutine, so there is one implementation of each call.
    """

    def __init__(self, config: ChannelConfig, retry: RetryPolicy | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="registry-client", daemon=True)
        self._thread.start()
        self._client: RegistryClient = self._run(self._make(config, retry))

    @staticmethod
    async def _make(config: ChannelConfig, retry: RetryPolicy | None) -> RegistryClient:
        return RegistryClient(config, retry)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def blocking(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if isinstance(result, Awaitable):
                return self._run(result)  # type: ignore[arg-type]
            return result

        return blocking

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
