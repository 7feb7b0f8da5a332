"""The registry: models, versions, aliases, runs and artifacts.

`AsyncRegistry` extends the services' own typed client with what a user needs
on top (paged iteration, updates, archive); `Registry` is its blocking twin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from maas.client import push as pushing
from maas.client.blocking import BlockingClient
from maas.client.config import channel_config
from maas.common import errors
from maas.common.clients.base import ChannelConfig
from maas.common.clients.registry import RegistryClient
from maas.common.retry import RetryPolicy
from maas.v1 import common_pb2
from maas.v1 import registry_pb2 as pb

VERSION_STATUSES = {
    "pending": pb.VERSION_STATUS_PENDING,
    "ready": pb.VERSION_STATUS_READY,
    "failed": pb.VERSION_STATUS_FAILED,
}


# Artifact formats by the names the CLI and the clients take (`--format onnx`).
FORMATS = {
    "safetensors": pb.MODEL_FORMAT_SAFETENSORS,
    "onnx": pb.MODEL_FORMAT_ONNX,
    "ort": pb.MODEL_FORMAT_ORT,
    "pte": pb.MODEL_FORMAT_PTE,
    "tokenizer": pb.MODEL_FORMAT_TOKENIZER,
    "torchscript": pb.MODEL_FORMAT_TORCHSCRIPT,
    "torch_export": pb.MODEL_FORMAT_TORCH_EXPORT,
    "pickle": pb.MODEL_FORMAT_PICKLE,
}


def format_number(format: str | int | None) -> int:
    """A ModelFormat number from its name ('onnx') or number; None or '' is UNSPECIFIED (the primary artifact)."""
    if format is None or format == "":
        return pb.MODEL_FORMAT_UNSPECIFIED
    if isinstance(format, int):
        return format
    try:
        return FORMATS[format.lower().removeprefix("model_format_")]
    except KeyError:
        raise ValueError(f"unknown artifact format {format!r}; one of: {', '.join(FORMATS)}") from None


def format_name(number: int) -> str:
    """'onnx' for MODEL_FORMAT_ONNX."""
    return pb.ModelFormat.Name(number).removeprefix("MODEL_FORMAT_").lower()  # type: ignore[arg-type]


def _tags(tags: Mapping[str, str] | None) -> list[common_pb2.TagFilter]:
    return [common_pb2.TagFilter(key=k, value=v) for k, v in (tags or {}).items()]


class AsyncRegistry(RegistryClient):
    def __init__(self, config: ChannelConfig | str | None = None, retry: RetryPolicy | None = None) -> None:
        super().__init__(channel_config("registry", config), retry)

    async def __aenter__(self) -> AsyncRegistry:
        return self

    async def iter_models(
        self, name_prefix: str = "", tags: Mapping[str, str] | None = None, page_size: int = 100
    ) -> AsyncIterator[pb.Model]:
        token = ""
        while True:
            req = pb.ListModelsRequest(
                name_prefix=name_prefix,
                tags=_tags(tags),
                page=common_pb2.PageRequest(page_size=page_size, page_token=token),
            )
            resp: pb.ListModelsResponse = await self.call(self.stub.ListModels, req, idempotent=True)
            for model in resp.models:
                yield model
            token = resp.next_page_token
            if not token:
                return

    async def iter_versions(
        self,
        model: str,
        *,
        statuses: Iterable[int] = (),
        tags: Mapping[str, str] | None = None,
        order: int = pb.VERSION_ORDER_NEWEST,
        order_metric: str = "",
        include_archived: bool = False,
        page_size: int = 100,
    ) -> AsyncIterator[pb.ModelVersion]:
        token = ""
        while True:
            req = pb.ListVersionsRequest(
                model=model,
                statuses=list(statuses),  # type: ignore[arg-type]
                tags=_tags(tags),
                order=order,  # type: ignore[arg-type]
                order_metric=order_metric,
                include_archived=include_archived,
                page=common_pb2.PageRequest(page_size=page_size, page_token=token),
            )
            resp = await self.list_versions(req)
            for version in resp.versions:
                yield version
            token = resp.next_page_token
            if not token:
                return

    async def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        set_tags: Mapping[str, str] | None = None,
        delete_tags: Iterable[str] = (),
    ) -> pb.Model:
        req = pb.UpdateModelRequest(name=name, set_tags=dict(set_tags or {}), delete_tags=list(delete_tags))
        if description is not None:
            req.description = description
        return await self.call(self.stub.UpdateModel, req, idempotent=True)

    async def archive_version(self, model: str, version: int, archived: bool = True) -> pb.ModelVersion:
        req = pb.ArchiveVersionRequest(model=model, version=version, archived=archived)
        return await self.call(self.stub.ArchiveVersion, req, idempotent=True)

    async def delete_version(self, model: str, version: int, force: bool = False) -> None:
        req = pb.DeleteVersionRequest(model=model, version=version, force=force)
        await self.call(self.stub.DeleteVersion, req, idempotent=False)

    async def download(
        self, model: str, version: int, dest: Path | str, *, format: str | int | None = None
    ) -> pb.ArtifactInfo:
        """One artifact of the version into `dest` (sha256 checked before the file appears); `format`
        ('onnx', 'safetensors', 'ort', 'pte', 'tokenizer', or a ModelFormat number) chooses it, None the primary one."""
        return await self.download_artifact(model, version, Path(dest), format=format_number(format))

    async def upload(
        self, model: str, version: int, path: Path | str, *, format: str | int | None = None
    ) -> pb.ModelVersion:
        """An artifact for the version: its primary one (None or the version's format) makes it READY;
        another format adds an artifact beside it."""
        return await self.upload_artifact(model, version, Path(path), format=format_number(format))

    async def push(
        self,
        model: str,
        path: Path | str,
        *,
        architecture: Mapping[str, Any] | str | None = None,
        args: Mapping[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
        labels: Sequence[str] | None = None,
        normalize: tuple[Sequence[float], Sequence[float]] | Mapping[str, Sequence[float]] | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        run_id: str = "",
        metrics: Mapping[str, float] | None = None,
        promote: str | None = None,
        progress: pushing.Progress | None = None,
        lineage: pb.Lineage | None = None,
        tokenizer: Path | str | None = None,
        max_length: int | None = None,
    ) -> pb.ModelVersion:
        """Register an ONNX or safetensors file as a new version of `model` (created if needed), READY.

        Safetensors needs `architecture`: a whole document, or a catalog name with `args` and
        `input_shape`; `labels` and `normalize` ((mean, std), one value or one per channel) set
        their keys. `promote` points that alias at the version once READY; `progress(sent, total)`
        follows the upload. A refused or interrupted upload leaves the version FAILED with the reason.
        Its lineage: `lineage` if given (a parent, a data set, ...), source "push" unless it says
        otherwise, and this process's maas and python versions. An ONNX text classifier (a graph
        taking input_ids and attention_mask) comes with its `tokenizer` (a tokenizer.json) and the
        `max_length` it truncates at; the inference service then takes strings.
        """
        return await pushing.push(
            self,
            model,
            path,
            architecture=architecture,
            args=args,
            input_shape=input_shape,
            labels=labels,
            normalize=normalize,
            description=description,
            tags=tags,
            run_id=run_id,
            metrics=metrics,
            promote=promote,
            progress=progress,
            lineage=lineage,
            tokenizer=tokenizer,
            max_length=max_length,
        )

    async def iter_deployments(self, name_prefix: str = "", page_size: int = 100) -> AsyncIterator[pb.Deployment]:
        token = ""
        while True:
            resp = await self.list_deployments(name_prefix, page_size, token)
            for deployment in resp.deployments:
                yield deployment
            token = resp.next_page_token
            if not token:
                return

    async def deploy(self, name: str, spec: pb.DeploymentSpec, expected_generation: int = 0) -> pb.Deployment:
        """Declare what `name` serves: create the deployment, or replace the spec of the one there."""
        try:
            return await self.update_deployment(name, spec, expected_generation)
        except errors.NotFound:
            if expected_generation:
                raise
        try:
            return await self.create_deployment(name, spec)
        except errors.AlreadyExists:  # created in between: this spec replaces that one's
            return await self.update_deployment(name, spec)

    async def list_runs(self, job_id: str = "", page_size: int = 0, page_token: str = "") -> pb.ListRunsResponse:
        req = pb.ListRunsRequest(job_id=job_id, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token))
        return await self.call(self.stub.ListRuns, req, idempotent=True)


async def _collect(stream: AsyncIterator[pb.ModelVersion], limit: int) -> list[pb.ModelVersion]:
    out = []
    async for item in stream:
        out.append(item)
        if limit and len(out) >= limit:
            break
    return out


class Registry(BlockingClient[AsyncRegistry]):
    """Blocking client of the registry, for scripts and notebooks.

    >>> reg = Registry()                 # MAAS_REGISTRY_ADDRESS or 127.0.0.1:50051
    >>> reg.resolve("digits@production").version
    """

    service = "registry"
    async_class = AsyncRegistry

    # models
    def create_model(self, name: str, description: str = "", tags: Mapping[str, str] | None = None) -> pb.Model:
        return self._runner.run(self.aio.create_model(name, description, tags))

    def get_model(self, name: str) -> pb.Model:
        return self._runner.run(self.aio.get_model(name))

    def models(self, name_prefix: str = "", tags: Mapping[str, str] | None = None) -> Generator[pb.Model, None, None]:
        return self._runner.iterate(self.aio.iter_models(name_prefix, tags))

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        set_tags: Mapping[str, str] | None = None,
        delete_tags: Iterable[str] = (),
    ) -> pb.Model:
        coro = self.aio.update_model(name, description=description, set_tags=set_tags, delete_tags=delete_tags)
        return self._runner.run(coro)

    def delete_model(self, name: str, force: bool = False) -> None:
        self._runner.run(self.aio.delete_model(name, force))

    # versions
    def create_version(self, model: str, *, format: int, **options: Any) -> pb.ModelVersion:
        """A new PENDING version (architecture, signature, run_id, description, tags, metrics, lineage as
        `AsyncRegistry.create_version` takes them); `upload` makes it READY. `push` does both for a file."""
        return self._runner.run(self.aio.create_version(model, format=format, **options))

    def get_version(self, model: str, version: int) -> pb.ModelVersion:
        return self._runner.run(self.aio.get_version(model, version))

    def resolve(self, ref: str) -> pb.ModelVersion:
        """'name@alias', 'name/3' or 'name' (its latest READY version)."""
        return self._runner.run(self.aio.resolve(ref))

    def versions(
        self,
        model: str,
        *,
        statuses: Iterable[int] = (),
        tags: Mapping[str, str] | None = None,
        order: int = pb.VERSION_ORDER_NEWEST,
        order_metric: str = "",
        include_archived: bool = False,
        limit: int = 0,
    ) -> list[pb.ModelVersion]:
        """Versions of a model, newest first unless `order` says otherwise; `limit` 0 means all."""
        stream = self.aio.iter_versions(
            model,
            statuses=statuses,
            tags=tags,
            order=order,
            order_metric=order_metric,
            include_archived=include_archived,
            page_size=min(limit, 100) if limit else 100,
        )
        return self._runner.run(_collect(stream, limit))

    def set_alias(self, model: str, alias: str, version: int) -> pb.Alias:
        return self._runner.run(self.aio.set_alias(model, alias, version))

    def delete_alias(self, model: str, alias: str) -> None:
        self._runner.run(self.aio.delete_alias(model, alias))

    def archive_version(self, model: str, version: int, archived: bool = True) -> pb.ModelVersion:
        return self._runner.run(self.aio.archive_version(model, version, archived))

    def delete_version(self, model: str, version: int, force: bool = False) -> None:
        """Refused (FailedPrecondition) while an alias points at it, unless `force` (which deletes those aliases)."""
        self._runner.run(self.aio.delete_version(model, version, force))

    def download(
        self, model: str, version: int, dest: Path | str, *, format: str | int | None = None
    ) -> pb.ArtifactInfo:
        """One artifact of the version into `dest` (sha256 checked before the file appears); `format`
        ('onnx', 'safetensors', 'ort', 'pte', 'tokenizer', or a ModelFormat number) chooses it, None the primary one."""
        return self._runner.run(self.aio.download(model, version, dest, format=format))

    def upload(self, model: str, version: int, path: Path | str, *, format: str | int | None = None) -> pb.ModelVersion:
        """An artifact for the version: its primary one (None or the version's format) makes it READY;
        another format adds an artifact beside it."""
        return self._runner.run(self.aio.upload(model, version, path, format=format))

    def push(self, model: str, path: Path | str, **options: Any) -> pb.ModelVersion:
        """Register an ONNX or safetensors file as a new version, READY (`AsyncRegistry.push` has the
        options); Ctrl-C while it uploads leaves the version FAILED, not PENDING.

        >>> reg.push("my-resnet", "resnet18.onnx", labels=["cat", "dog"], promote="production")
        >>> reg.push("my-resnet", "resnet18.safetensors", architecture="resnet18",
        ...          args={"num_classes": 2}, input_shape=(3, 224, 224))
        >>> reg.push("reviews", "bert.onnx", tokenizer="tokenizer.json", max_length=128, labels=["neg", "pos"])
        """
        return self._runner.run_cancelling(self.aio.push(model, path, **options))

    # deployments
    def deploy(self, name: str, spec: pb.DeploymentSpec, expected_generation: int = 0) -> pb.Deployment:
        """Declare what `name` serves (created, or its spec replaced); `expected_generation` makes it conditional.

        >>> reg.deploy("digits", deployment_spec(["digits@production:90", "digits/7:10"], shadow="digits@staging"))
        """
        return self._runner.run(self.aio.deploy(name, spec, expected_generation))

    def get_deployment(self, name: str) -> pb.Deployment:
        return self._runner.run(self.aio.get_deployment(name))

    def deployments(self, name_prefix: str = "") -> Generator[pb.Deployment, None, None]:
        return self._runner.iterate(self.aio.iter_deployments(name_prefix))

    def delete_deployment(self, name: str, expected_generation: int = 0) -> None:
        self._runner.run(self.aio.delete_deployment(name, expected_generation))

    # runs and metrics
    def get_run(self, run_id: str) -> pb.Run:
        return self._runner.run(self.aio.get_run(run_id))

    def metric_history(self, run_id: str, key: str, *, min_step: int = 0, max_step: int = 0) -> pb.MetricSeries:
        return self._runner.run(self.aio.metric_history(run_id, key, min_step=min_step, max_step=max_step))
