"""maas.client: typed Python clients of the maas services.

    from maas.client import Registry, Trainer, Inference

    trainer = Trainer()                        # addresses from MAAS_*_ADDRESS or the defaults
    job = trainer.submit({"model": {"name": "mlp"}, "dataset": {"name": "digits"},
                          "epochs": 10, "register_as": "digits",
                          "promotion": {"alias": "production", "metric": "val_accuracy", "threshold": 0.9}})
    final = trainer.wait(job.job_id)
    Inference().predict("digits", pixels)      # {"logits": array([...], dtype=float32)}
    Registry().push("my-net", "net.onnx", promote="production")    # a model built anywhere
    log_model("my-net", module, example_input)  # a live torch module, exported to ONNX and checked

Every method has a deadline; failures raise the `maas.common.errors` classes
(NotFound, InvalidArgument, FailedPrecondition, Unavailable, ...). The
`Async*` classes are the same clients for asyncio code.

`Inference` (and `AsyncInference`) import the generated Open Inference
Protocol modules, which cannot share a process with tritonclient; they are
loaded on first use, so importing this package does not pull them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maas.client.config import Endpoints
from maas.client.deployments import deployment_spec
from maas.client.log_model import log_model
from maas.client.registry import AsyncRegistry, Registry
from maas.client.trainer import AsyncTrainer, Trainer
from maas.common import errors
from maas.common.clients.base import ChannelConfig, RetryPolicy
from maas.common.errors import MaasError

if TYPE_CHECKING:
    from maas.client.inference import AsyncInference, Inference, InferResult, ModelInfo

__all__ = [
    "AsyncInference",
    "AsyncRegistry",
    "AsyncTrainer",
    "ChannelConfig",
    "Endpoints",
    "InferResult",
    "Inference",
    "MaasError",
    "ModelInfo",
    "Registry",
    "RetryPolicy",
    "Trainer",
    "deployment_spec",
    "errors",
    "log_model",
]

_LAZY = {"AsyncInference", "Inference", "InferResult", "ModelInfo"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from maas.client import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'maas.client' has no attribute '{name}'")
