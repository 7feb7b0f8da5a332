"""The registry's session boundary is the shared one (maas.common.sql)."""

from maas.common.sql import Database, normalize_url, now_ms, redact

__all__ = ["Database", "normalize_url", "now_ms", "redact"]
