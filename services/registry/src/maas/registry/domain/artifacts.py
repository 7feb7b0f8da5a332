"""Artifact upload and download, streaming, with every byte accounted for.

A version becomes READY only after its bytes are durable under their
content-addressed name and have passed the format policy and the content
checks (`upload_checks`); an interrupted upload leaves the version PENDING and
nothing visible, refused content leaves it FAILED and nothing visible.

A version may hold more artifacts than its primary one: the same model in
other formats (the trainer's ONNX export), one per format, uploaded while the
version is PENDING or READY under the same format policy and durability
rules. Refused content there fails only that upload, never the version.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from maas.common import errors, names
from maas.registry import entities
from maas.registry.db import statements as st
from maas.registry.db.database import Database, now_ms
from maas.registry.domain import events, upload_checks, versions
from maas.registry.domain.abandoned import LiveUploads
from maas.registry.storage import formats, onnx_checks
from maas.registry.storage.store import SHA256_HEX, LocalArtifactStore, PendingBlob

log = logging.getLogger("maas.registry.artifacts")

MAX_CHUNK = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class UploadHeader:
    model: str
    version: int
    size_bytes: int
    sha256: str
    format: entities.ModelFormat | None


class ArtifactService:
    def __init__(
        self,
        db: Database,
        store: LocalArtifactStore,
        executor: Executor,
        *,
        max_bytes: int,
        trusted_formats: bool,
        on_event: Callable[[list[entities.Event]], None],
        uploads: LiveUploads,
    ) -> None:
        self._db = db
        self._store = store
        self._executor = executor
        self._uploads = uploads
        self._max_bytes = max_bytes
        self._trusted = trusted_formats
        self._on_event = on_event

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ----------------------------------------------------------------- upload

    async def upload(self, header: UploadHeader, chunks: AsyncIterator[bytes]) -> entities.Version:
        self._check_header(header)
        # Recorded as activity, so the version is not failed as abandoned while bytes arrive.
        async with self._uploads.receiving(header.model, header.version) as live:
            return await self._upload(header, live.fed(chunks))

    async def _upload(self, header: UploadHeader, chunks: AsyncIterator[bytes]) -> entities.Version:
        self._check_header(header)
        declared, primary = await self._io(self._target, header)
        pending: PendingBlob = await self._io(self._store.begin)
        try:
            async for chunk in chunks:
                if len(chunk) > MAX_CHUNK:
                    raise errors.InvalidArgument(f"chunk: larger than {MAX_CHUNK} bytes")
                if pending.size + len(chunk) > header.size_bytes:
                    raise errors.InvalidArgument("more bytes than size_bytes declared")
                await self._io(pending.write, chunk)
            if pending.size != header.size_bytes:
                raise errors.InvalidArgument(f"stream ended after {pending.size} of {header.size_bytes} declared bytes")
            digest = await self._io(pending.finish)
            if digest != header.sha256:
                raise errors.InvalidArgument("sha256 does not match the bytes received")
            if primary:
                signature = await self._content_checked(header, pending, declared)
            else:
                await self._io(self._check_additional, header, pending.path, declared)
            await self._io(pending.commit, digest)
        except BaseException:
            # Inline, not on the executor: when the client goes away the call is
            # cancelled, and a cancelled await would drop a queued cleanup and
            # leave the temp file behind (a close and an unlink; cheap).
            pending.abort()
            raise
        if not primary:
            return await self._io(self._add_artifact, header, declared, digest)
        return await self._io(self._mark_ready, header, digest, signature)

    async def _content_checked(
        self, header: UploadHeader, pending: PendingBlob, declared: entities.ModelFormat
    ) -> entities.Signature | None:
        """The bytes arrived whole; content refused now FAILS the version (see upload_checks)."""
        try:
            await self._io(formats.check, pending.path, declared, self._trusted)
            version = await self._io(upload_checks.read, self._db, header.model, header.version)
            return await self._io(upload_checks.check, pending.path, version)
        except errors.InvalidArgument as exc:
            pending.abort()
            await self._io(upload_checks.fail, self._db, self._on_event, header.model, header.version, exc.message)
            raise

    def _check_header(self, header: UploadHeader) -> None:
        names.model_name(header.model, "header.model")
        names.version_number(header.version, "header.version")
        if header.size_bytes <= 0:
            raise errors.InvalidArgument("header.size_bytes: must be positive")
        if header.size_bytes > self._max_bytes:
            raise errors.ResourceExhausted(
                f"artifact of {header.size_bytes} bytes is over the limit of {self._max_bytes} bytes"
            )
        if not SHA256_HEX.fullmatch(header.sha256):
            raise errors.InvalidArgument("header.sha256: must be 64 lower-case hex digits")

    def _target(self, header: UploadHeader) -> tuple[entities.ModelFormat, bool]:
        """The format the upload is stored as, and whether it is the version's primary artifact."""

        def tx(conn: Connection) -> tuple[entities.ModelFormat, bool]:
            row = st.VERSION_STATE.first(conn, {"model": header.model, "number": header.version})
            if row is None:
                raise errors.NotFound(f"version {header.model}/{header.version} not found")
            version_format = entities.ModelFormat(row[2])
            if header.format is None or header.format == version_format:
                self._require_pending(row[1], header)
                return version_format, True
            self._require_room(conn, row[0], row[1], header, header.format)
            return header.format, False

        return self._db.read_conn(tx)

    @staticmethod
    def _require_room(
        conn: Connection, version_id: int, status: str, header: UploadHeader, fmt: entities.ModelFormat
    ) -> None:
        """An additional artifact: the version has not FAILED and has none in this format yet."""
        if status == entities.VersionStatus.FAILED.value:
            raise errors.FailedPrecondition(f"version {header.model}/{header.version} has FAILED")
        held = {f for f, _ in st.VERSION_ARTIFACTS.rows(conn, {"version_id": version_id})}
        if fmt.value in held:
            raise errors.AlreadyExists(
                f"version {header.model}/{header.version} already has a {fmt.value} artifact (artifacts are immutable)"
            )

    def _check_additional(self, header: UploadHeader, path: Path, fmt: entities.ModelFormat) -> None:
        """The format policy; for ONNX the graph checks and the version's signature; a tokenizer needs a text model."""
        formats.check(path, fmt, self._trusted)
        if fmt == entities.ModelFormat.ONNX:
            version = upload_checks.read(self._db, header.model, header.version)
            found = upload_checks.onnx_graph(path, version)
            if version.signature.inputs or version.signature.outputs:
                onnx_checks.agree(version.signature, found)
        elif fmt == entities.ModelFormat.TOKENIZER:
            upload_checks.require_text_model(upload_checks.read(self._db, header.model, header.version))

    def _add_artifact(self, header: UploadHeader, fmt: entities.ModelFormat, digest: str) -> entities.Version:
        def tx(conn: Connection, log: events.Log) -> entities.Version:
            version_id, status, *_ = versions.lock(conn, header.model, header.version)
            self._require_room(conn, version_id, status, header, fmt)
            st.INSERT_ARTIFACT.execute(
                conn,
                {
                    "version_id": version_id,
                    "format": fmt.value,
                    "size_bytes": header.size_bytes,
                    "sha256": digest,
                    "created_at_ms": now_ms(),
                },
            )
            log.append(entities.EventType.ARTIFACT_ADDED, header.model, version=header.version)
            return versions.get(conn, header.model, header.version)

        return self._written(tx, digest)

    def _written(self, tx: Callable[[Connection, events.Log], entities.Version], digest: str) -> entities.Version:
        try:
            return events.write(self._db, tx, self._on_event)
        except errors.MaasError:
            # The blob may now belong to no version: drop it unless another uses it.
            if self._db.read_conn(lambda conn: st.VERSION_WITH_BLOB.scalar(conn, {"sha256": digest})) is None:
                self._store.delete(digest)
            raise

    @staticmethod
    def _require_pending(status: str, header: UploadHeader) -> None:
        if status == entities.VersionStatus.READY.value:
            raise errors.FailedPrecondition(
                f"version {header.model}/{header.version} already has its artifact (versions are immutable)"
            )
        if status == entities.VersionStatus.FAILED.value:
            raise errors.FailedPrecondition(f"version {header.model}/{header.version} has FAILED")

    def _mark_ready(
        self, header: UploadHeader, digest: str, signature: entities.Signature | None = None
    ) -> entities.Version:
        def tx(conn: Connection, log: events.Log) -> entities.Version:
            version_id, status, fmt, *_ = versions.lock(conn, header.model, header.version)
            self._require_pending(status, header)
            upload_checks.store_signature(conn, version_id, signature)
            ts = now_ms()
            st.MARK_READY.execute(
                conn, {"version_id": version_id, "sha256": digest, "size_bytes": header.size_bytes, "now_ms": ts}
            )
            st.INSERT_ARTIFACT.execute(
                conn,
                {
                    "version_id": version_id,
                    "format": fmt,
                    "size_bytes": header.size_bytes,
                    "sha256": digest,
                    "created_at_ms": ts,
                },
            )
            log.append(entities.EventType.VERSION_READY, header.model, version=header.version)
            return versions.get(conn, header.model, header.version)

        return self._written(tx, digest)

    # --------------------------------------------------------------- download

    async def download(
        self, model: str, number: int, fmt: entities.ModelFormat | None = None
    ) -> tuple[entities.ArtifactInfo, AsyncIterator[bytes]]:
        """The primary artifact (`fmt` None or the version's format), or the one in `fmt`."""
        names.model_name(model)
        names.version_number(number)

        def tx(conn: Connection) -> entities.ArtifactInfo:
            version = versions.get(conn, model, number)
            if version.status != entities.VersionStatus.READY:
                raise errors.FailedPrecondition(f"version {model}/{number} is {version.status.value}, not READY")
            if fmt is None or fmt == version.format:
                return entities.ArtifactInfo(version.size_bytes, version.sha256, version.format)
            for artifact in version.artifacts:
                if artifact.format == fmt:
                    return entities.ArtifactInfo(artifact.size_bytes, artifact.sha256, artifact.format)
            held = ", ".join(a.format.value for a in version.artifacts) or version.format.value
            raise errors.NotFound(f"version {model}/{number} has no {fmt.value} artifact (it has: {held})")

        info = await self._io(self._db.read_conn, tx)
        return info, self._stream(info)

    async def _stream(self, info: entities.ArtifactInfo) -> AsyncIterator[bytes]:
        chunks: Iterator[bytes] = self._store.read(info.sha256)
        digest = hashlib.sha256()
        size = 0
        done = object()
        while True:
            chunk = await self._io(next, chunks, done)
            if chunk is done:
                break
            assert isinstance(chunk, bytes)
            digest.update(chunk)
            size += len(chunk)
            if size > info.size_bytes:
                break
            yield chunk
        if size != info.size_bytes or digest.hexdigest() != info.sha256:
            log.error("stored artifact %s does not match its recorded sha256/size", info.sha256)
            raise errors.DataLoss("stored artifact is corrupt (sha256 mismatch); it must be uploaded again")

    def release(self, shas: list[str]) -> None:
        """Delete blobs that no version references any more."""
        for sha in shas:
            try:
                self._store.delete(sha)
            except OSError:
                log.warning("could not delete blob %s", sha, exc_info=True)
