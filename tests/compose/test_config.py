"""docker-compose.yml validates, and says what it promises: health checks, volumes, the front's two ports,
replicas that scale, an image without torch for the registry."""

from __future__ import annotations

import importlib.metadata
import re
import shlex

import yaml
from packaging.requirements import Requirement

from tests.compose.support import COMPOSE_FILE, MAAS_SERVICES, ROOT, compose_config, environment


def test_compose_file_validates_and_interpolates() -> None:
    doc = compose_config({"MAAS_INFERENCE_MODELS": "digits@production", "MAAS_DB_PASSWORD": "s3cret"})
    services = doc["services"]
    assert set(services) == {"postgres", "registry", "trainer", "inference", "front"}
    assert environment(services["inference"])["MAAS_INFERENCE_MODELS"] == "digits@production"
    # Every model's production version is served under its name unless the variable turns it off.
    assert environment(services["inference"])["MAAS_INFERENCE_SERVE_ALIAS"] == "production"
    off = compose_config({"MAAS_INFERENCE_SERVE_ALIAS": ""})["services"]["inference"]
    assert environment(off)["MAAS_INFERENCE_SERVE_ALIAS"] == ""
    for name in ("registry", "trainer"):
        url = next(v for k, v in environment(services[name]).items() if k.endswith("_DATABASE_URL"))
        assert url.startswith("postgresql+psycopg://") and ":s3cret@postgres:5432/" in url


def test_only_the_inference_front_is_published() -> None:
    services = compose_config()["services"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"front"}
    texts = [
        port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}:{port.get('target')}"
        for port in services["front"]["ports"]
    ]
    assert sorted(text.split("/")[0].rsplit(":", 1)[1] for text in texts) == ["8000", "8001"], texts  # HTTP, gRPC
    assert all(text.startswith("127.0.0.1:") for text in texts), "loopback by default"


def test_inference_replicas_can_scale() -> None:
    services = compose_config()["services"]
    inference = services["inference"]
    assert "container_name" not in inference and not inference.get("ports")
    # The front balances per request over every replica Docker's DNS returns, and only over SERVING ones.
    command = services["front"]["command"]
    envoy = yaml.safe_load(command[command.index("--config-yaml") + 1])
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    listeners = {item["name"]: item for item in envoy["static_resources"]["listeners"]}
    assert set(clusters) == {"inference", "inference-http"} and set(listeners) == {"oip", "oip-http"}
    cluster = clusters["inference"]
    assert cluster["type"] == "STRICT_DNS"
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == (
        "inference",
        int(environment(inference)["MAAS_INFERENCE_PORT"]),
    )
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"], "gRPC upstreams speak HTTP/2"
    assert "grpc_health_check" in cluster["health_checks"][0]
    for listener_name, cluster_name, port in (("oip", "inference", 8001), ("oip-http", "inference-http", 8000)):
        listener = listeners[listener_name]
        assert listener["address"]["socket_address"]["port_value"] == port
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        assert manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == cluster_name
    # The HTTP/REST side: the same replicas' HTTP port, only to those whose /v2/health/ready says ready.
    web = clusters["inference-http"]
    assert web["type"] == "STRICT_DNS"
    (group,) = web["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == (
        "inference",
        int(environment(inference)["MAAS_INFERENCE_HTTP_PORT"]),
    )
    assert web["health_checks"][0]["http_health_check"]["path"] == "/v2/health/ready"


def test_health_checks_use_grpc_health_on_each_service_port() -> None:
    services = compose_config()["services"]
    for name in MAAS_SERVICES:
        svc = services[name]
        env = environment(svc)
        test = svc["healthcheck"]["test"]
        argv = shlex.split(test[1]) if test[0] == "CMD-SHELL" else test[1:]
        assert argv[:3] == ["python", "-m", "maas.cli.health"], argv
        assert argv[-1] == f"127.0.0.1:{env[f'MAAS_{name.upper()}_PORT']}"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["registry"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("trainer", "inference"):
        assert services[name]["depends_on"]["registry"]["condition"] == "service_healthy"
        assert environment(services[name])[f"MAAS_{name.upper()}_REGISTRY_ADDRESS"] == "registry:50051"
    assert services["front"]["depends_on"]["inference"]["condition"] == "service_healthy"


def test_state_lives_in_named_volumes() -> None:
    doc = compose_config()
    assert {"pgdata", "artifacts", "trainer-data"} <= set(doc["volumes"])
    services = doc["services"]

    def mounts(name: str) -> dict[str, str]:
        out = {}
        for volume in services[name].get("volumes", []):
            source, target = volume.split(":")[:2] if isinstance(volume, str) else (volume["source"], volume["target"])
            out[source] = target
        return out

    assert mounts("postgres")["pgdata"] == "/var/lib/postgresql/data"
    assert mounts("registry")["artifacts"] == environment(services["registry"])["MAAS_REGISTRY_ARTIFACT_ROOT"]
    assert mounts("trainer")["trainer-data"] == environment(services["trainer"])["MAAS_TRAINER_DATA_DIR"]
    assert environment(services["registry"])["MAAS_REGISTRY_AUTO_MIGRATE"] == "true"


def test_every_service_has_a_dockerfile_and_runs_maas_serve() -> None:
    services = compose_config()["services"]
    for name in MAAS_SERVICES:
        build = services[name]["build"]
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile == ROOT / "services" / name / "Dockerfile" and dockerfile.is_file()
        assert services[name]["command"] == ["maas", "serve", name]
        text = dockerfile.read_text()
        assert re.search(rf'CMD \["maas", "serve", "{name}"\]', text)
        assert "maas.cli.health" in text
    assert COMPOSE_FILE.is_file()


def _installed_by(dockerfile: str) -> list[Requirement]:
    """The local packages a Dockerfile's pip installs name, as requirements (with extras)."""
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    reqs = []
    for match in re.finditer(r'"?\./(services/\w+|cli)(\[[\w,]+\])?"?', text):
        pyproject = (ROOT / match.group(1) / "pyproject.toml").read_text()
        name = re.search(r'^name = "([^"]+)"', pyproject, re.M)
        assert name is not None
        reqs.append(Requirement(name.group(1) + (match.group(2) or "")))
    return reqs


def _closure(reqs: list[Requirement]) -> set[str]:
    seen: set[str] = set()
    todo = list(reqs)
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in seen and not req.extras:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for raw in dist.requires or []:
            dep = Requirement(raw)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(dep)
    return seen


def test_the_registry_image_has_no_torch() -> None:
    registry = _closure(_installed_by("services/registry/Dockerfile"))
    assert {"maas-registry", "maas-common", "maas", "sqlalchemy", "grpcio"} <= registry
    assert not {"torch", "torchvision", "onnxruntime"} & registry
    for name in ("trainer", "inference"):
        assert "torch" in _closure(_installed_by(f"services/{name}/Dockerfile"))
