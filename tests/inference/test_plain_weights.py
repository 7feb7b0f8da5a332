"""A plain torchvision state_dict, saved with safetensors, is served as what torch computes.

No maas wrapper, no prefix: `torchvision.models.resnet18(num_classes=N).state_dict()`
with the architecture document's normalization, on 1-channel images (repeated
to 3 channels by the service). The registry checks it at upload (READY), the
inference service loads and serves it, and the answer is compared with the
same network run here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc

from maas.common.clients.registry import BlockingRegistryClient
from maas.v1 import registry_pb2 as rpb
from tests.inference import support

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

ARCH = {
    "name": "resnet18",
    "args": {"num_classes": 5},
    "input_shape": [1, 32, 32],
    "normalize": {"mean": [0.5], "std": [0.25]},
}
SIGNATURE = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 32, 32]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 5]}],
}


@pytest.fixture(scope="module")
def plain_net() -> torch.nn.Module:
    torch.manual_seed(7)
    return torchvision.models.resnet18(num_classes=5).eval()


@pytest.fixture(scope="module")
def address(
    workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient, plain_net: torch.nn.Module
) -> Iterator[str]:
    from safetensors.torch import save

    data = save(plain_net.state_dict())
    version = support.upload(
        registry,
        "plain",
        rpb.MODEL_FORMAT_SAFETENSORS,
        data,
        architecture=ARCH,
        signature=support.signature_pb(SIGNATURE),
    )
    assert registry.get_version("plain", version).status == rpb.VERSION_STATUS_READY
    registry.set_alias("plain", "production", version)
    proc = support.start_inference(registry_process.address, workdir / "inference-plain", models="plain")
    yield proc.address
    assert proc.stop() == 0, proc.log()[-2000:]


def test_a_plain_torchvision_state_dict_is_served_as_torch_computes_it(
    address: str, plain_net: torch.nn.Module
) -> None:
    x = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    tensor = tc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client = tc.InferenceServerClient(address)
    try:
        got = client.infer("plain", [tensor]).as_numpy("logits")
    finally:
        client.close()
    with torch.inference_mode():
        expected = plain_net(((torch.from_numpy(x) - 0.5) / 0.25).expand(-1, 3, -1, -1)).numpy()
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
