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
SUFFIX = {
    rpb.MODEL_FORMAT_SAFETENSORS: ".safetensors",
    rpb.MODEL_FORMAT_ONNX: ".onnx",
    rpb.MODEL_FORMAT_TOKENIZER: ".tokenizer.json",
}
PREFERRED = {"onnx": rpb.MODEL_FORMAT_ONNX, "safetensors": rpb.MODEL_FORMAT_SAFETENSORS}


def choose_artifact(version: rpb.ModelVersion, preferred: str) -> rpb.Artifact:
    """The artifact to serve: the preferred format when the version has it, else its primary one."""
    want = PREFERRED[preferred]
    for artifact in version.artifacts:
        if artifact.format == want:
            return artifact
    return rpb.Artifact(format=version.format, size_bytes=version.size_bytes, sha256=version.sha256)


def text_artifacts(version: rpb.ModelVersion) -> tuple[rpb.Artifact, rpb.Artifact]:
    """A text model's graph (its ONNX artifact) and tokenizer; FailedPrecondition naming what is missing."""
    by_format = {a.format: a for a in version.artifacts}
    held = ", ".join(rpb.ModelFormat.Name(a.format).removeprefix("MODEL_FORMAT_") for a in version.artifacts)
    ref = f"{version.model}/{version.version}"
    graph = by_format.get(rpb.MODEL_FORMAT_ONNX)
    if graph is None:
        raise errors.FailedPrecondition(f"{ref} is a text model without an ONNX artifact (it has: {held or 'none'})")
    tokenizer = by_format.get(rpb.MODEL_FORMAT_TOKENIZER)
    if tokenizer is None:
        raise errors.FailedPrecondition(
            f"{ref} is a text model without its tokenizer: the version has no TOKENIZER artifact "
            f"(it has: {held or 'none'}); upload its tokenizer.json with format TOKENIZER"
        )
    return graph, tokenizer


class ArtifactCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, version: rpb.ModelVersion, artifact: rpb.Artifact | None = None) -> Path:
        sha, fmt = (artifact.sha256, artifact.format) if artifact is not None else (version.sha256, version.format)
        if not SHA256.fullmatch(sha):
            raise errors.FailedPrecondition(f"{version.model}/{version.version} has no valid artifact checksum")
        suffix = SUFFIX.get(fmt)
        if suffix is None:
            raise errors.FailedPrecondition(
                f"{version.model}/{version.version}: format {rpb.ModelFormat.Name(fmt)} is not served "
                "(only safetensors and ONNX, and a text model's tokenizer)"
            )
        return self.root / "blobs" / f"{sha}{suffix}"

    async def fetch(
        self, client: RegistryClient, version: rpb.ModelVersion, artifact: rpb.Artifact | None = None
    ) -> Path:
        """The verified local file of `artifact` (default: the version's primary one), downloading it when needed."""
        path = self.path_for(version, artifact)
        expected = artifact.sha256 if artifact is not None else version.sha256
        if path.exists():
            if await asyncio.to_thread(sha256_file, path) == expected:
                return path
            log.warning(
                "cached artifact of %s/%s does not match its sha256; downloading again", version.model, version.version
            )
            path.unlink(missing_ok=True)
        fmt = artifact.format if artifact is not None else 0
        info = await client.download_artifact(version.model, version.version, path, format=fmt)
        if info.sha256 != expected:
            path.unlink(missing_ok=True)
            raise errors.DataLoss(
                f"the artifact of {version.model}/{version.version} does not match its recorded sha256"
            )
        return path
