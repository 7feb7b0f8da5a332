"""The SHA-256 of a file: how artifacts are named, checked on upload, download and in caches."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex digest of the file's bytes, read in chunks by hashlib (never the whole file in memory)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
