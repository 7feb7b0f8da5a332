"""The local artifact cache: files named by their sha256, checked before use.

Paths are derived only from the registry's sha256 record (64 hex digits) and
the version's format, never from a client's text. A cached file is hashed
again before every use; one that does not match is deleted and downloaded
anew, and a download is verified before it appears under its name.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from maas.common import errors
from maas.common.clients.registry import RegistryClient
from maas.common.digest import sha256_file
from maas.v1 import registry_pb2 as rpb

log = logging.getLogger("maas.inference.cache")

SHA256 = re.compile(r"[0-9a-f]{64}")
SUFFIX = {rpb.MODEL_FORMAT_SAFETENSORS: ".safetensors", rpb.MODEL_FORMAT_ONNX: ".onnx"}


class ArtifactCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, version: rpb.ModelVersion) -> Path:
        if not SHA256.fullmatch(version.sha256):
            raise errors.FailedPrecondition(f"{version.model}/{version.version} has no valid artifact checksum")
        suffix = SUFFIX.get(version.format)
        if suffix is None:
            raise errors.FailedPrecondition(
                f"{version.model}/{version.version}: format {rpb.ModelFormat.Name(version.format)} is not served "
                "(only safetensors and ONNX)"
            )
        return self.root / "blobs" / f"{version.sha256}{suffix}"

    async def fetch(self, client: RegistryClient, version: rpb.ModelVersion) -> Path:
        """The verified local file of `version`, downloading it when needed."""
        path = self.path_for(version)
        if path.exists():
            if await asyncio.to_thread(sha256_file, path) == version.sha256:
                return path
            log.warning(
                "cached artifact of %s/%s does not match its sha256; downloading again", version.model, version.version
            )
            path.unlink(missing_ok=True)
        info = await client.download_artifact(version.model, version.version, path)
        if info.sha256 != version.sha256:
            path.unlink(missing_ok=True)
            raise errors.DataLoss(
                f"the artifact of {version.model}/{version.version} does not match its recorded sha256"
            )
        return path
