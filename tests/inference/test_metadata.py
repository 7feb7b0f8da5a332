"""ServerMetadata reports the installed distribution's version, not a literal.

Run in a subprocess: the servicer imports maas.oip, whose `inference.*` symbols
clash with tritonclient's in this process. The subprocess makes the installed
metadata say another version before the service is imported, and reads the
version back from a real ServerMetadata answer.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

ASK = """
import asyncio, importlib.metadata, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: sys.argv[1] if name == "maas-inference" else real(name)
from maas.inference.servicer import InferenceServicer
from maas.oip import grpc_service_pb2 as pb
answer = asyncio.run(InferenceServicer(None).ServerMetadata(pb.ServerMetadataRequest(), None))
print(answer.name, answer.version)
"""


def served_version(installed: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", ASK, installed], capture_output=True, text=True, check=True, timeout=120
    )
    name, version = done.stdout.split()
    return name, version


def test_server_metadata_version_is_the_installed_package_version() -> None:
    assert served_version(importlib.metadata.version("maas-inference")) == (
        "maas-inference",
        importlib.metadata.version("maas-inference"),
    )
    assert served_version("7.3.1rc2") == ("maas-inference", "7.3.1rc2")
