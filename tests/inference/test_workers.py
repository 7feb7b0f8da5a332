"""Several serving processes on one port (SO_REUSEPORT), under one supervisor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.grpc as tc

from maas.common.clients.registry import BlockingRegistryClient
from tests.inference import support


def test_two_workers_share_the_port_and_stop_together(
    workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient
) -> None:
    _, module = support.register_torch(registry, "shared", support.MLP_ARCH, seed=7)
    proc = support.start_inference(registry_process.address, workdir / "workers", models="shared", workers=2)
    try:
        assert len([line for line in proc.lines if line.startswith("inference listening on ")]) == 2
        x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
        wanted = support.expected(module, x, support.min_execution_rows(proc.address, "shared"))
        # Separate subchannel pools: one connection per client, spread over the workers by the kernel.
        clients = [
            tc.InferenceServerClient(proc.address, channel_args=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(6)
        ]
        for client in clients:
            assert client.is_model_ready("shared")
            tensor = tc.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(x)
            assert np.array_equal(client.infer("shared", [tensor]).as_numpy("logits"), wanted)
            client.close()
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]
