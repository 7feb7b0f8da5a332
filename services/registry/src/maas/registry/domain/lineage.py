"""A version's lineage: checked at CreateVersion, stored as given, its parent required to exist.

The registry does not interpret lineage beyond these bounds: what produced
the version (one of `entities.LINEAGE_SOURCES`, or nothing), the job, the
parent version, the data set and the software versions are the producer's
record. A parent that does not exist is NOT_FOUND, as a run_id that does
not exist is.
"""

from __future__ import annotations

import math
import re

from sqlalchemy.engine import Connection

from maas.common import errors, names
from maas.registry import entities
from maas.registry.db import statements as st
from maas.registry.db.schema import lineage_to_json

MAX_LINEAGE_BYTES = 64 * 1024
MAX_SOFTWARE = 32
MAX_SHORT_CHARS = 256
MAX_PATH_CHARS = 1024
SHA256 = re.compile(r"[0-9a-f]{64}")


def validate(lineage: entities.Lineage | None) -> str:
    """Check a lineage's fields and size; returns its stored JSON text ("" for none)."""
    if lineage is None:
        return ""
    if lineage.source and lineage.source not in entities.LINEAGE_SOURCES:
        raise errors.InvalidArgument(
            f"lineage.source: '{lineage.source[:40]}' is not one of {', '.join(entities.LINEAGE_SOURCES)} (or empty)"
        )
    if lineage.job_id:
        names.job_id(lineage.job_id, "lineage.job_id")
    if lineage.parent is not None:
        names.model_name(lineage.parent.model, "lineage.parent.model")
        names.version_number(lineage.parent.version, "lineage.parent.version")
    if lineage.dataset is not None:
        _validate_dataset(lineage.dataset)
    names.text_value(lineage.method, "lineage.method", MAX_SHORT_CHARS)
    names.text_value(lineage.architecture_origin, "lineage.architecture_origin", MAX_SHORT_CHARS)
    names.text_value(lineage.pretrained_path, "lineage.pretrained.path", MAX_PATH_CHARS)
    if lineage.pretrained_sha256 and not SHA256.fullmatch(lineage.pretrained_sha256):
        raise errors.InvalidArgument("lineage.pretrained.sha256: must be 64 lowercase hex digits")
    if lineage.pretrained_sha256 and not lineage.pretrained_path:
        raise errors.InvalidArgument("lineage.pretrained.path: must be set with lineage.pretrained.sha256")
    if len(lineage.software) > MAX_SOFTWARE:
        raise errors.InvalidArgument(f"lineage.software: at most {MAX_SOFTWARE} entries")
    for key, value in lineage.software:
        names.tag_key(key, "lineage.software")
        names.text_value(value, f"lineage.software[{key}]", MAX_SHORT_CHARS)
    text = lineage_to_json(lineage)
    if len(text) > MAX_LINEAGE_BYTES:
        raise errors.InvalidArgument(f"lineage: larger than {MAX_LINEAGE_BYTES} bytes")
    return text


def _validate_dataset(ds: entities.DatasetLineage) -> None:
    if not ds.name:
        raise errors.InvalidArgument("lineage.dataset.name: must be set when a data set is given")
    names.text_value(ds.name, "lineage.dataset.name", MAX_SHORT_CHARS)
    names.text_value(ds.path, "lineage.dataset.path", MAX_PATH_CHARS)
    names.text_value(ds.fingerprint, "lineage.dataset.fingerprint", MAX_SHORT_CHARS)
    names.text_value(ds.origin, "lineage.dataset.origin", MAX_SHORT_CHARS)
    if len(ds.args_json) > MAX_LINEAGE_BYTES:
        raise errors.InvalidArgument(f"lineage.dataset.args: larger than {MAX_LINEAGE_BYTES} bytes")
    if not math.isfinite(ds.validation_split) or not 0.0 <= ds.validation_split < 1.0:
        raise errors.InvalidArgument("lineage.dataset.validation_split: must be a finite number in [0, 1)")


def check_parent(conn: Connection, lineage: entities.Lineage | None) -> None:
    """NotFound unless the lineage's parent version exists (inside the creating transaction)."""
    if lineage is None or lineage.parent is None:
        return
    parent = lineage.parent
    if st.VERSION_STATE.first(conn, {"model": parent.model, "number": parent.version}) is None:
        raise errors.NotFound(f"lineage.parent: version {parent.model}/{parent.version} not found")
