"""TLS and mutual TLS on the listeners and on service-to-service calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from maas.common import errors
from maas.common.clients.base import ChannelConfig
from maas.common.clients.registry import RegistryClient
from maas.common.server import InsecureConfiguration, RunningServer, start_server
from maas.registry.app import RegistryApp
from maas.trainer.app import TrainerApp
from maas.v1 import trainer_pb2 as tpb
from maas.v1 import trainer_pb2_grpc
from tests.conftest import registry_settings
from tests.security.pki import Pki, make_pki
from tests.trainer.conftest import digits_spec, trainer_settings, wait_job

ADMIN, TRAINER, READ = "admin-token-0123456789", "trainer-token-012345678", "read-token-01234567890"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
async def mtls_registry(pki: Pki, tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = registry_settings(
        f"sqlite:///{tmp_path / 'r.db'}",
        tmp_path / "artifacts",
        auto_migrate=True,
        auth_tokens=f"{ADMIN}:admin,{TRAINER}:write,{READ}:read",
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca.cert,
    )
    running = await start_server(settings, RegistryApp(settings))
    yield running
    await running.stop(0)


def config(
    address: str, pki: Pki, *, client: str | None = "client", ca: bool = True, token: str | None = ADMIN
) -> ChannelConfig:
    pair = {"client": pki.client, "stranger": pki.stranger}.get(client or "")
    return ChannelConfig(
        address,
        timeout=5,
        tls=ca,
        root_certificates=pki.ca.cert.read_bytes() if ca else None,
        certificate_chain=pair.cert.read_bytes() if pair else None,
        private_key=pair.key.read_bytes() if pair else None,
        token=token,
    )


async def test_mutual_tls_admits_only_our_clients(mtls_registry: RunningServer, pki: Pki) -> None:
    address = f"localhost:{mtls_registry.port}"
    async with RegistryClient(config(address, pki)) as good:
        assert (await good.create_model("secured")).name == "secured"
    cases = {
        "plaintext": config(address, pki, client=None, ca=False),
        "no client certificate": config(address, pki, client=None),
        "certificate from another CA": config(address, pki, client="stranger"),
    }
    for label, cfg in cases.items():
        client = RegistryClient(cfg)
        try:
            with pytest.raises(errors.Unavailable):
                await client.create_model(f"x-{label.replace(' ', '-')}")
        finally:
            await client.close()
    # A good channel without a token still meets the token check.
    async with RegistryClient(config(address, pki, token=None)) as anonymous:
        with pytest.raises(errors.Unauthenticated):
            await anonymous.get_model("secured")


async def test_trainer_hands_off_to_the_registry_over_mutual_tls(
    mtls_registry: RunningServer, pki: Pki, tmp_path: Path
) -> None:
    settings = trainer_settings(
        tmp_path / "trainer",
        f"localhost:{mtls_registry.port}",
        registry_token=TRAINER,
        registry_ca_file=pki.ca.cert,
        registry_cert_file=pki.client.cert,
        registry_key_file=pki.client.key,
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
    )
    trainer = await start_server(settings, TrainerApp(settings))
    try:
        creds = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{trainer.port}", creds) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            job = await stub.SubmitJob(tpb.SubmitJobRequest(spec=digits_spec(epochs=1, register_as="over-tls")))
            done = await wait_job(stub, job.job_id)
            assert done.state == tpb.JOB_STATE_SUCCEEDED, done.reason
        async with RegistryClient(config(f"localhost:{mtls_registry.port}", pki, token=READ)) as reader:
            version = await reader.get_version("over-tls", 1)
            assert version.sha256 and version.run_id
    finally:
        await trainer.stop(0)


def test_an_exposed_unprotected_server_refuses_to_start(tmp_path: Path, pki: Pki) -> None:
    import asyncio

    from maas.registry.settings import RegistrySettings

    async def start(**kwargs: object) -> None:
        settings = RegistrySettings(port=0, metrics_port=0, data_dir=tmp_path, host="0.0.0.0", **kwargs)  # type: ignore[arg-type]
        running = await start_server(settings, RegistryApp(settings))
        await running.stop(0)

    for kwargs in (
        {},
        {"auth_tokens": f"{ADMIN}:admin"},
        {"tls_cert_file": pki.server.cert, "tls_key_file": pki.server.key},
    ):
        with pytest.raises(InsecureConfiguration):
            asyncio.run(start(**kwargs))
    # Both together, or an explicit opt-out, start.
    asyncio.run(start(auth_tokens=f"{ADMIN}:admin", tls_cert_file=pki.server.cert, tls_key_file=pki.server.key))
    asyncio.run(start(allow_insecure=True))
