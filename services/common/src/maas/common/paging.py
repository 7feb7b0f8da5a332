"""Keyset page tokens.

A token holds the sort key of the last item served and a fingerprint of the
filter it was issued for. Keyset paging is stable under concurrent inserts (no
item is skipped or repeated because rows appeared before the cursor), and a
token replayed with another filter is refused instead of silently misapplied.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from maas.common.errors import InvalidArgument

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def page_size(requested: int, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> int:
    if requested < 0:
        raise InvalidArgument("page_size: must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(last_key: list[Any], scope: str) -> str:
    raw = json.dumps({"k": last_key, "s": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, scope: str) -> list[Any] | None:
    """The key after which the page starts, or None for the first page."""
    if not token:
        return None
    if len(token) > 2048:
        raise InvalidArgument("page_token: invalid")
    try:
        padded = token + "=" * (-len(token) % 4)
        doc = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key, token_scope = doc["k"], doc["s"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token: invalid") from exc
    if token_scope != scope or not isinstance(key, list):
        raise InvalidArgument("page_token: issued for a different query")
    return key
