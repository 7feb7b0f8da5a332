"""Our Open Inference Protocol contract is wire-compatible with the published one.

Every message, field and enum value we declare in protos/maas/oip must exist in
tritonclient's generated descriptors (compiled from the published
grpc_service.proto and model_config.proto) with the same number, type, label
and message type; every RPC we declare must have the published request and
response types. Our descriptors are read in a separate process: both sets
register the same `inference.*` symbols and cannot live in one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.json_format import MessageToDict

DUMP = """
import json, sys
from google.protobuf import descriptor_pb2
from google.protobuf.json_format import MessageToDict
from maas.oip import grpc_service_pb2, model_config_pb2
out = []
for module in (grpc_service_pb2, model_config_pb2):
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    out.append(MessageToDict(proto))
json.dump(out, sys.stdout)
"""


def ours() -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-c", DUMP], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)


def published() -> list[dict[str, Any]]:
    from tritonclient.grpc import model_config_pb2, service_pb2

    out = []
    for module in (service_pb2, model_config_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        out.append(MessageToDict(proto))
    return out


def index(files: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Full name -> message, enum, and method descriptors (as dicts)."""
    messages: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    methods: dict[str, Any] = {}

    def walk(prefix: str, message: dict[str, Any]) -> None:
        name = f"{prefix}.{message['name']}"
        messages[name] = message
        for nested in message.get("nestedType", []):
            walk(name, nested)
        for enum in message.get("enumType", []):
            enums[f"{name}.{enum['name']}"] = enum

    for f in files:
        package = f".{f['package']}"
        for message in f.get("messageType", []):
            walk(package, message)
        for enum in f.get("enumType", []):
            enums[f"{package}.{enum['name']}"] = enum
        for service in f.get("service", []):
            for method in service.get("method", []):
                methods[f"{package}.{service['name']}/{method['name']}"] = method
    return messages, enums, methods


def test_every_declared_field_has_the_published_number_and_type() -> None:
    our_messages, our_enums, our_methods = index(ours())
    their_messages, their_enums, their_methods = index(published())
    assert our_methods, "no RPCs found in our descriptors"

    for name, method in our_methods.items():
        assert name in their_methods, f"{name} is not a published RPC"
        theirs = their_methods[name]
        for key in ("inputType", "outputType", "clientStreaming", "serverStreaming"):
            assert method.get(key) == theirs.get(key), f"{name}.{key}"

    checked = 0
    for name, message in our_messages.items():
        assert name in their_messages, f"message {name} is not published"
        their_fields = {f["name"]: f for f in their_messages[name].get("field", [])}
        for field in message.get("field", []):
            theirs = their_fields.get(field["name"])
            assert theirs is not None, f"{name}.{field['name']} is not a published field"
            for key in ("number", "type", "label", "typeName"):
                assert field.get(key) == theirs.get(key), f"{name}.{field['name']}: {key} differs"
            checked += 1
    for name, enum in our_enums.items():
        assert name in their_enums, f"enum {name} is not published"
        their_values = {v["name"]: v.get("number", 0) for v in their_enums[name]["value"]}
        for value in enum["value"]:
            assert their_values.get(value["name"]) == value.get("number", 0), f"{name}.{value['name']}"
    # The RPCs the service must implement are all declared.
    required = {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
        "ModelStreamInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad",
        "RepositoryModelUnload",
    }  # fmt: skip
    assert {n.split("/")[1] for n in our_methods} == required
    assert checked > 100
