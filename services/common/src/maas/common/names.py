"""Validation of every client-supplied identifier, in one place.

Identifiers never become file system paths (the registry derives storage paths
from content hashes), but they are still held to strict patterns so traversal
forms, URLs, control characters and oversized strings are refused up front
with INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maas.common.errors import InvalidArgument

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
TAG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
METRIC_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,249}")
RUN_ID = re.compile(r"[0-9a-f]{32}")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_VALUE_CHARS = 5000
LATEST = "latest"  # the alias that means the highest READY version
RESERVED_ALIASES = frozenset({LATEST})


def _clip(value: str) -> str:
    shown = value[:40].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(value) > 40 else "")


def model_name(value: str, field: str = "model") -> str:
    if not MODEL_NAME.fullmatch(value) or ".." in value:
        raise InvalidArgument(
            f"{field}: invalid model name '{_clip(value)}' (1-128 of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit, no '..')"
        )
    return value


def alias_name(value: str, field: str = "alias", *, allow_reserved: bool = False) -> str:
    if not ALIAS_NAME.fullmatch(value):
        raise InvalidArgument(f"{field}: invalid alias '{_clip(value)}' (1-64 of a-z 0-9 _ -, starting with a letter)")
    if not allow_reserved and value in RESERVED_ALIASES:
        raise InvalidArgument(f"{field}: alias '{value}' is reserved")
    return value


def version_number(value: int, field: str = "version") -> int:
    if value <= 0:
        raise InvalidArgument(f"{field}: version must be a positive number, got {value}")
    return value


def tag_key(value: str, field: str = "tag") -> str:
    if not TAG_KEY.fullmatch(value):
        raise InvalidArgument(f"{field}: invalid key '{_clip(value)}'")
    return value


def metric_key(value: str, field: str = "metric") -> str:
    if not METRIC_KEY.fullmatch(value) or ".." in value:
        raise InvalidArgument(f"{field}: invalid metric key '{_clip(value)}'")
    return value


def text_value(value: str, field: str, max_chars: int = MAX_VALUE_CHARS) -> str:
    if len(value) > max_chars:
        raise InvalidArgument(f"{field}: longer than {max_chars} characters")
    if "\x00" in value:
        raise InvalidArgument(f"{field}: contains a NUL character")
    return value


def tags(values: dict[str, str], field: str = "tags") -> dict[str, str]:
    if len(values) > 100:
        raise InvalidArgument(f"{field}: at most 100 tags")
    for key, value in values.items():
        tag_key(key, f"{field}[{_clip(key)}]")
        text_value(value, f"{field}[{key}]")
    return dict(values)


def job_id(value: str, field: str = "job_id") -> str:
    if not JOB_ID.fullmatch(value) or ".." in value:
        raise InvalidArgument(f"{field}: invalid job id '{_clip(value)}'")
    return value


def run_id(value: str, field: str = "run_id") -> str:
    if not RUN_ID.fullmatch(value):
        raise InvalidArgument(f"{field}: invalid run id '{_clip(value)}'")
    return value


@dataclass(frozen=True)
class VersionRef:
    """A parsed reference: exactly one of `version` or `alias` is set.

    alias "latest" means the highest READY version.
    """

    model: str
    version: int = 0
    alias: str = ""

    def __str__(self) -> str:
        return f"{self.model}/{self.version}" if self.version else f"{self.model}@{self.alias}"


def parse_ref(ref: str, field: str = "ref") -> VersionRef:
    """'name@alias', 'name/3' or 'name' (= 'name@latest')."""
    if "@" in ref:
        model, _, alias = ref.partition("@")
        return VersionRef(model_name(model, field), alias=alias_name(alias, field, allow_reserved=True))
    if "/" in ref:
        model, _, number = ref.partition("/")
        if not number.isdigit() or len(number) > 18:
            raise InvalidArgument(f"{field}: invalid version in '{_clip(ref)}'")
        return VersionRef(model_name(model, field), version=version_number(int(number), field))
    return VersionRef(model_name(ref, field), alias="latest")
