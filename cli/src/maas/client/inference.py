"""The inference service over the Open Inference Protocol, with numpy in and out.

This client uses maas's own generated `maas.oip` stubs, not tritonclient: the
two register the same protobuf symbols and cannot live in one process. Any
Open Inference Protocol server works with it (maas, Triton, KServe, MLServer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maas.client import tensors
from maas.client.blocking import BlockingClient
from maas.client.config import channel_config
from maas.common.clients.base import AsyncClient, ChannelConfig, RetryPolicy
from maas.common.errors import InvalidArgument
from maas.oip import grpc_service_pb2 as oip
from maas.oip import grpc_service_pb2_grpc


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class InferResult:
    model: str
    version: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    id: str = ""


def _tensor_info(items: Iterable[Any]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in items)


def _parameter(value: str | int | bool) -> oip.ModelRepositoryParameter:
    if isinstance(value, bool):
        return oip.ModelRepositoryParameter(bool_param=value)
    if isinstance(value, int):
        return oip.ModelRepositoryParameter(int64_param=value)
    return oip.ModelRepositoryParameter(string_param=value)


class AsyncInference(AsyncClient):
    def __init__(self, config: ChannelConfig | str | None = None, retry: RetryPolicy | None = None) -> None:
        super().__init__(channel_config("inference", config), retry)
        self.stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self._metadata_cache: dict[tuple[str, str], ModelInfo] = {}
        self._batch_cache: dict[tuple[str, str], int] = {}

    async def __aenter__(self) -> AsyncInference:
        return self

    async def server_live(self) -> bool:
        return bool((await self.call(self.stub.ServerLive, oip.ServerLiveRequest(), idempotent=True)).live)

    async def server_ready(self) -> bool:
        return bool((await self.call(self.stub.ServerReady, oip.ServerReadyRequest(), idempotent=True)).ready)

    async def model_ready(self, model: str, version: str = "") -> bool:
        req = oip.ModelReadyRequest(name=model, version=version)
        return bool((await self.call(self.stub.ModelReady, req, idempotent=True)).ready)

    async def server_metadata(self) -> oip.ServerMetadataResponse:
        return await self.call(self.stub.ServerMetadata, oip.ServerMetadataRequest(), idempotent=True)

    async def model_metadata(self, model: str, version: str = "") -> ModelInfo:
        req = oip.ModelMetadataRequest(name=model, version=version)
        resp = await self.call(self.stub.ModelMetadata, req, idempotent=True)
        info = ModelInfo(
            resp.name, tuple(resp.versions), resp.platform, _tensor_info(resp.inputs), _tensor_info(resp.outputs)
        )
        self._metadata_cache[(model, version)] = info
        return info

    async def model_config(self, model: str, version: str = "") -> Any:
        req = oip.ModelConfigRequest(name=model, version=version)
        return (await self.call(self.stub.ModelConfig, req, idempotent=True)).config

    async def statistics(self, model: str = "", version: str = "") -> oip.ModelStatisticsResponse:
        req = oip.ModelStatisticsRequest(name=model, version=version)
        return await self.call(self.stub.ModelStatistics, req, idempotent=True)

    async def repository_index(self, ready: bool = False) -> list[oip.RepositoryIndexResponse.ModelIndex]:
        resp = await self.call(self.stub.RepositoryIndex, oip.RepositoryIndexRequest(ready=ready), idempotent=True)
        return list(resp.models)

    async def load(self, model: str, *, alias: str = "", version: int = 0, timeout: float | None = None) -> None:
        """Serve `model` following `alias` (or pinned to `version`); returns once it is loaded."""
        params: dict[str, oip.ModelRepositoryParameter] = {}
        if alias:
            params["alias"] = _parameter(alias)
        if version:
            params["version"] = _parameter(version)
        req = oip.RepositoryModelLoadRequest(model_name=model, parameters=params)
        # Loading downloads and warms a model: give it longer than a plain call.
        await self.call(
            self.stub.RepositoryModelLoad, req, idempotent=True, timeout=timeout or max(60.0, self.config.timeout)
        )

    async def unload(self, model: str) -> None:
        req = oip.RepositoryModelUnloadRequest(model_name=model)
        await self.call(self.stub.RepositoryModelUnload, req, idempotent=True)

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: str = "",
        *,
        outputs: Iterable[str] = (),
        datatypes: Mapping[str, str] | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> InferResult:
        """One ModelInfer with raw contents. `datatypes` overrides what each array's dtype implies."""
        req = oip.ModelInferRequest(model_name=model, model_version=version, id=request_id)
        for name, value in inputs.items():
            array = np.asarray(value)
            datatype = (datatypes or {}).get(name) or tensors.datatype_of(array)
            req.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
            req.raw_input_contents.append(tensors.to_raw(array, datatype))
        for name in outputs:
            req.outputs.add(name=name)
        resp = await self.call(self.stub.ModelInfer, req, idempotent=True, timeout=timeout)
        return InferResult(resp.model_name, resp.model_version, decode_outputs(resp), resp.id)

    async def max_batch_size(self, model: str, version: str = "") -> int:
        """Rows one request may carry (0: no limit declared)."""
        key = (model, version)
        if key not in self._batch_cache:
            self._batch_cache[key] = int((await self.model_config(model, version)).max_batch_size)
        return self._batch_cache[key]

    async def infer_array(
        self, model: str, array: Any, version: str = "", *, timeout: float | None = None
    ) -> InferResult:
        """Run a single-input model on `array` (cast to the declared datatype).

        Arrays with more rows than the model's max_batch_size go as several
        concurrent requests (which the server batches again); the outputs are
        joined back in order.
        """
        info = self._metadata_cache.get((model, version)) or await self.model_metadata(model, version)
        if len(info.inputs) != 1:
            names = ", ".join(t.name for t in info.inputs)
            raise InvalidArgument(f"model '{model}' takes {len(info.inputs)} inputs ({names}); use infer()")
        spec = info.inputs[0]
        data = tensors.as_datatype(array, spec.datatype)
        limit = await self.max_batch_size(model, version)
        if not limit or data.ndim == 0 or data.shape[0] <= limit:
            return await self.infer(
                model, {spec.name: data}, version, datatypes={spec.name: spec.datatype}, timeout=timeout
            )
        if not version:
            # Pin every part to one version, so a swap mid-way cannot mix two models' answers.
            first = await self.infer(
                model, {spec.name: data[:limit]}, "", datatypes={spec.name: spec.datatype}, timeout=timeout
            )
            version, parts = first.version, [first]
            start = limit
        else:
            parts, start = [], 0
        chunks = [data[i : i + limit] for i in range(start, data.shape[0], limit)]
        parts += await asyncio.gather(
            *(
                self.infer(model, {spec.name: c}, version, datatypes={spec.name: spec.datatype}, timeout=timeout)
                for c in chunks
            )
        )
        outputs = {name: np.concatenate([p.outputs[name] for p in parts]) for name in parts[0].outputs}
        return InferResult(parts[0].model, parts[0].version, outputs, parts[0].id)

    async def predict(
        self, model: str, array: Any, version: str = "", *, timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """Run a single-input model on `array` (any number of rows); its outputs by name."""
        return (await self.infer_array(model, array, version, timeout=timeout)).outputs


def decode_outputs(resp: oip.ModelInferResponse) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    raw = list(resp.raw_output_contents)
    for index, tensor in enumerate(resp.outputs):
        if raw:
            out[tensor.name] = tensors.from_raw(tensor.datatype, list(tensor.shape), raw[index])
        else:
            out[tensor.name] = tensors.from_contents(tensor.datatype, list(tensor.shape), tensor.contents)
    return out


class Inference(BlockingClient[AsyncInference]):
    """Blocking Open Inference Protocol client with numpy in and out.

    >>> infer = Inference()              # MAAS_INFERENCE_ADDRESS or 127.0.0.1:8001
    >>> logits = infer.predict("digits", pixels)["logits"]   # pixels: float32 [N, 1, 8, 8]
    """

    service = "inference"
    async_class = AsyncInference

    def server_live(self) -> bool:
        return self._runner.run(self.aio.server_live())

    def server_ready(self) -> bool:
        return self._runner.run(self.aio.server_ready())

    def model_ready(self, model: str, version: str = "") -> bool:
        return self._runner.run(self.aio.model_ready(model, version))

    def model_metadata(self, model: str, version: str = "") -> ModelInfo:
        return self._runner.run(self.aio.model_metadata(model, version))

    def repository_index(self, ready: bool = False) -> list[oip.RepositoryIndexResponse.ModelIndex]:
        return self._runner.run(self.aio.repository_index(ready))

    def statistics(self, model: str = "", version: str = "") -> oip.ModelStatisticsResponse:
        return self._runner.run(self.aio.statistics(model, version))

    def load(self, model: str, *, alias: str = "", version: int = 0, timeout: float | None = None) -> None:
        self._runner.run(self.aio.load(model, alias=alias, version=version, timeout=timeout))

    def unload(self, model: str) -> None:
        self._runner.run(self.aio.unload(model))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: str = "",
        *,
        outputs: Iterable[str] = (),
        datatypes: Mapping[str, str] | None = None,
    ) -> InferResult:
        return self._runner.run(self.aio.infer(model, inputs, version, outputs=outputs, datatypes=datatypes))

    def infer_array(self, model: str, array: Any, version: str = "") -> InferResult:
        return self._runner.run(self.aio.infer_array(model, array, version))

    def predict(self, model: str, array: Any, version: str = "") -> dict[str, np.ndarray]:
        return self._runner.run(self.aio.predict(model, array, version))
