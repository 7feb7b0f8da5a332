"""Checks an upload's content must pass before its version can be READY.

No version that no runtime can serve becomes READY: safetensors weights must
be exactly the tensors their architecture needs (checked from the header, no
torch), and an ONNX graph must be one the serving onnxruntime loads, with no
external data; its signature is extracted and stored. When the bytes arrived
whole (size and sha256 verified) but their content is refused, retrying the
same bytes cannot help: the version becomes FAILED with the refusal as its
status_reason, the bytes are dropped, and the call answers INVALID_ARGUMENT
with the same reason. A broken transfer (short stream, digest mismatch) leaves
the version PENDING for another try.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Connection

from maas.common import architectures, errors, text_task
from maas.common.prepared import Prepared
from maas.registry import entities
from maas.registry.db import statements as st
from maas.registry.db.database import Database
from maas.registry.db.schema import signature_to_json
from maas.registry.domain import events, versions
from maas.registry.storage import onnx_checks, weights_checks

log = logging.getLogger("maas.registry.upload_checks")

MAX_REASON = 1000

SET_SIGNATURE = Prepared(
    update(st.versions)
    .where(st.versions.c.id == bindparam("version_id"))
    .values(signature_json=bindparam("signature_json"))
)


def check(path: Path, version: entities.Version) -> entities.Signature | None:
    """The signature to store (an ONNX graph's, when the version declared none), or None to keep the version's."""
    if version.format.edge_only:
        # Versions created before CreateVersion refused edge formats: still never READY on such a file.
        raise errors.InvalidArgument(f"{version.format.value} is an edge format nothing here serves")
    if version.format == entities.ModelFormat.SAFETENSORS:
        weights_checks.check(path, architectures.parse(version.architecture))
        return None
    if version.format == entities.ModelFormat.ONNX:
        found = onnx_graph(path, version)
        if version.signature.inputs or version.signature.outputs:
            onnx_checks.agree(version.signature, found)
            return None
        return found
    return None  # trusted formats that carry code: nothing can be checked without running them


def onnx_graph(path: Path, version: entities.Version) -> entities.Signature:
    """The graph's signature, checked as onnxruntime serves it and, for a text model, as the tokenizer feeds it."""
    found = onnx_checks.check(path)
    if text_task.max_length_of(version.architecture) is not None:
        text_task.check_graph(
            [(t.name, t.datatype, len(t.shape)) for t in found.inputs],
            [(t.name, t.datatype, len(t.shape)) for t in found.outputs],
        )
    return found


def require_text_model(version: entities.Version) -> None:
    """A tokenizer belongs only to a text model's version."""
    if text_task.max_length_of(version.architecture) is None:
        raise errors.FailedPrecondition(
            f"version {version.model}/{version.version} is not a text model (its architecture has no "
            f"task {text_task.TEXT_CLASSIFICATION}): a tokenizer has nothing to feed"
        )


def read(db: Database, model: str, number: int) -> entities.Version:
    return db.read_conn(lambda conn: versions.get(conn, model, number))


def store_signature(conn: Connection, version_id: int, signature: entities.Signature | None) -> None:
    """Inside the transaction that marks the version READY."""
    if signature is not None:
        SET_SIGNATURE.execute(conn, {"version_id": version_id, "signature_json": signature_to_json(signature)})


def fail(db: Database, on_event: Callable[[list[entities.Event]], None], model: str, number: int, reason: str) -> None:
    """Mark a PENDING version FAILED with the refusal; never raises over the refusal itself."""

    def tx(conn: Connection, elog: events.Log) -> None:
        version_id, status, *_ = versions.lock(conn, model, number)
        if status == entities.VersionStatus.PENDING.value:
            st.FAIL_VERSION.execute(conn, {"version_id": version_id, "reason": reason[:MAX_REASON]})
            elog.append(entities.EventType.VERSION_FAILED, model, version=number)

    try:
        events.write(db, tx, on_event)
    except errors.MaasError:
        log.warning("could not mark %s/%d FAILED after refusing its upload", model, number, exc_info=True)
