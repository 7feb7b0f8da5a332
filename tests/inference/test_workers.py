"""Several serving processes on one gRPC port and one HTTP port (SO_REUSEPORT), under one supervisor."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.http as th

from maas.common.clients.registry import BlockingRegistryClient
from maas.inference.__main__ import reserve_port
from tests.inference import support


def test_two_workers_share_the_port_and_stop_together(
    workdir: Path, registry_process: support.Process, registry: BlockingRegistryClient
) -> None:
    _, module = support.register_torch(registry, "shared", support.MLP_ARCH, seed=7)
    proc = support.start_inference(registry_process.address, workdir / "workers", models="shared", workers=2)
    try:
        listening = [line.split()[-1] for line in proc.lines if line.startswith("inference listening on ")]
        assert len(listening) == 2 and listening[0] == listening[1] == proc.address  # started on port 0
        assert not proc.address.endswith(":0")
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
        # The HTTP/REST port is shared the same way: both workers report the one the supervisor picked.
        http = [line.split()[-1] for line in proc.lines if line.startswith("inference http listening on ")]
        assert len(http) == 2 and http[0] == http[1] == proc.http_url and not http[0].endswith(":0")
        for _ in range(6):  # a new connection each: spread over the workers by the kernel
            web = th.InferenceServerClient(proc.http_url.removeprefix("http://"))
            tensor = th.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(x)
            assert np.array_equal(web.infer("shared", [tensor]).as_numpy("logits"), wanted)
            web.close()
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]


def test_the_supervisor_holds_the_port_it_picked_for_its_workers() -> None:
    """Port 0 with several workers: the port stays taken from the moment it is picked, not bound and released."""
    with reserve_port("127.0.0.1", 0) as reserved:
        port = reserved.getsockname()[1]
        with socket.socket() as intruder, pytest.raises(OSError):
            intruder.bind(("127.0.0.1", port))
        with socket.socket() as worker:  # what each worker's gRPC server does
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen()
            with socket.create_connection(("127.0.0.1", port), timeout=10):
                accepted, _ = worker.accept()
                accepted.close()
