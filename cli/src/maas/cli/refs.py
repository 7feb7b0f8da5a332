"""Version references on the command line: MODEL, MODEL@ALIAS, MODEL/VERSION, or MODEL and VERSION apart."""

from __future__ import annotations

from maas.client.registry import Registry
from maas.common import names
from maas.common.errors import InvalidArgument
from maas.v1 import registry_pb2 as rpb


def parse(ref: str) -> names.VersionRef:
    return names.parse_ref(ref, "reference")


def join(model: str, version: str) -> str:
    """MODEL and a VERSION argument (a number, or an alias) as one reference."""
    if not version:
        return model
    if version.isdigit():
        return f"{model}/{version}"
    if version.startswith("@"):
        return f"{model}{version}"
    if "/" in version or "@" in version:
        raise InvalidArgument(f"version: expected a number or an alias, got '{version[:40]}'")
    return f"{model}@{version}"


def resolve(registry: Registry, ref: str) -> rpb.ModelVersion:
    parse(ref)  # a clear INVALID_ARGUMENT here rather than a round trip
    return registry.resolve(ref)


def status_name(status: int) -> str:
    return rpb.VersionStatus.Name(status).removeprefix("VERSION_STATUS_")


def format_name(fmt: int) -> str:
    return rpb.ModelFormat.Name(fmt).removeprefix("MODEL_FORMAT_").lower()
