"""ListCatalog's domain side: which of the installed entries a request asks for."""

from __future__ import annotations

from maas.common import plugins
from maas.common.errors import InvalidArgument, NotFound
from maas.common.plugins import KINDS, Kind

MAX_NAME_CHARS = 64


def listing(kind: str, name: str) -> list[plugins.Entry]:
    """Every entry of `kind` ("" for both) named `name` ("" for all), available or not, by kind then name."""
    if kind and kind not in KINDS:
        raise InvalidArgument(f"kind: '{kind[:40]}' is not one of {', '.join(KINDS)} (or empty)")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(f"name: at most {MAX_NAME_CHARS} characters")
    kinds: tuple[Kind, ...] = (kind,) if kind else KINDS  # type: ignore[assignment]
    catalog = plugins.installed()
    out = [
        entry
        for each in kinds
        for entry in sorted(catalog.entries(each), key=lambda e: (e.name, not e.available))
        if not name or entry.name == name
    ]
    if name and not out:
        raise NotFound(f"catalog: no {' or '.join(kinds)} named '{name[:40]}' is installed")
    return out
