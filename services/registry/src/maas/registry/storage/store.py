"""A content-addressed blob store on a local (or shared) directory.

Layout under the artifact root, every path derived by the server:
  tmp/<random>.part          uploads in progress (never served)
  blobs/sha256/ab/<64 hex>   finished blobs, named by their sha256

An upload is written to tmp/, fsynced, verified, and only then renamed into
blobs/ (an atomic rename within one file system) and the directory fsynced.
A crash leaves at most a stale .part file, which `sweep` removes later.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from maas.common import errors
from maas.common.digest import sha256_file

log = logging.getLogger("maas.registry.store")

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK = 1024 * 1024


def _full_disk(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def _refused_when_full() -> Iterator[None]:
    """Out of space is the client's RESOURCE_EXHAUSTED; any other OSError stays one (INTERNAL)."""
    try:
        yield
    except OSError as exc:
        if _full_disk(exc):
            raise errors.ResourceExhausted("artifact storage is full") from exc
        raise


class PendingBlob:
    """A temp file being written; `commit` makes it a blob.

    The file is unbuffered: every byte is either written by `write` or refused
    there, so closing it writes nothing and cannot fail a second time on a
    full disk (a buffered file flushes on close and hits ENOSPC again).
    """

    def __init__(self, store: LocalArtifactStore, path: Path) -> None:
        self._store = store
        self.path = path
        self._file = path.open("xb", buffering=0)
        self._hash = hashlib.sha256()
        self.size = 0

    @contextlib.contextmanager
    def _or_abort(self) -> Iterator[None]:
        """A failed step leaves nothing behind."""
        try:
            with _refused_when_full():
                yield
        except BaseException:
            self.abort()
            raise

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        with self._or_abort():
            while view:
                # A raw write may take fewer bytes than offered (the disk filling).
                view = view[self._file.write(view) :]
        self._hash.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Fsync; returns the sha256 of what was written."""
        with self._or_abort():
            # File systems that allocate late report a full disk only here.
            os.fsync(self._file.fileno())
            self._file.close()
        return self._hash.hexdigest()

    def commit(self, sha256: str) -> None:
        # Making the blob's fan-out directory can be the thing that does not fit.
        with self._or_abort():
            self._store._adopt(self.path, sha256)
        self._store._live.discard(self.path)

    def abort(self) -> None:
        """Drop the temp file; never raises, as it runs while another error is on its way out."""
        try:
            self._file.close()
        except OSError:
            # Some file systems (NFS) report a deferred write error at close;
            # the bytes are being thrown away, so there is nothing to lose.
            log.debug("closing an aborted upload failed", exc_info=True)
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove an aborted upload; the sweep will", exc_info=True)
        self._store._live.discard(self.path)


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / "tmp"
        self.blobs = self.root / "blobs" / "sha256"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)
        # Temp files this process is writing: the sweep leaves them alone
        # however long their client pauses between chunks.
        self._live: set[Path] = set()

    def path_of(self, sha256: str) -> Path:
        if not SHA256_HEX.fullmatch(sha256):
            raise errors.InvalidArgument("sha256: must be 64 lower-case hex digits")
        path = self.blobs / sha256[:2] / sha256
        # Derived from a validated hex digest, so it cannot leave the root.
        assert path.resolve().is_relative_to(self.root)
        return path

    def begin(self) -> PendingBlob:
        path = self.tmp / f"{uuid.uuid4().hex}.part"
        with _refused_when_full():
            pending = PendingBlob(self, path)
        self._live.add(path)
        return pending

    def _adopt(self, tmp_path: Path, sha256: str) -> None:
        target = self.path_of(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and sha256_file(target) == sha256:
            # Same content is already stored intact (content addressing deduplicates).
            tmp_path.unlink(missing_ok=True)
            return
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def read(self, sha256: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        path = self.path_of(sha256)
        try:
            f = path.open("rb")
        except FileNotFoundError as exc:
            raise errors.DataLoss("artifact bytes are missing from storage") from exc
        with f:
            while chunk := f.read(chunk_size):
                yield chunk

    def delete(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)

    def sweep(self, older_than_s: float) -> int:
        """Remove uploads abandoned longer than `older_than_s` ago (crashes, kills)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for part in self.tmp.glob("*.part"):
            if part in self._live:
                continue
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("removed %d abandoned upload(s)", removed)
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
