"""The registry's fixed statements, built once and run as prepared statements.

Every call that names one object (create, get, resolve, set an alias, append
an event) runs a few of these on a Core connection through
`maas.common.prepared`: no ORM unit of work, no statement construction or
compilation per call, rows as plain tuples (`reads` turns them into
entities). A read of one object with its tags, metrics and aliases is one
statement (a UNION ALL of the row and its children), so one round trip on
PostgreSQL. The ORM rows in `schema` stay the source of truth for the tables.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    CompoundSelect,
    Double,
    Select,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    null,
    select,
    text,
    union_all,
    update,
)

from maas.common.prepared import Prepared
from maas.registry.db.schema import (
    AliasRow,
    CounterRow,
    EventRow,
    LatestMetricRow,
    ModelRow,
    ModelTagRow,
    RunRow,
    VersionArtifactRow,
    VersionMetricRow,
    VersionRow,
    VersionTagRow,
)

models = cast(Table, ModelRow.__table__)
model_tags = cast(Table, ModelTagRow.__table__)
versions = cast(Table, VersionRow.__table__)
version_tags = cast(Table, VersionTagRow.__table__)
version_metrics = cast(Table, VersionMetricRow.__table__)
version_artifacts = cast(Table, VersionArtifactRow.__table__)
aliases = cast(Table, AliasRow.__table__)
runs = cast(Table, RunRow.__table__)
latest_metrics = cast(Table, LatestMetricRow.__table__)
events = cast(Table, EventRow.__table__)
counters = cast(Table, CounterRow.__table__)

READY = "READY"


def _insert(table: Table, *names: str) -> Any:
    """INSERT of the named columns, each from the parameter of the same name."""
    return insert(table).values({name: bindparam(name) for name in names})


def _kind(kind: str) -> Any:
    """The constant first column of a UNION ALL branch, inline (no parameter)."""
    return literal_column(f"'{kind}'", String)


def _model_id(name: str = "model") -> Any:
    return select(models.c.id).where(models.c.name == bindparam(name)).scalar_subquery()


# ------------------------------------------------------------------ models

MODEL_ID = Prepared(select(models.c.id).where(models.c.name == bindparam("name")))
# The row lock that orders alias moves and deletes of one model (no-op on SQLite,
# whose write transactions hold the database lock from BEGIN IMMEDIATE).
LOCK_MODEL = Prepared(select(models.c.id).where(models.c.name == bindparam("name")).with_for_update())
INSERT_MODEL = Prepared(
    _insert(models, "name", "description", "last_version", "created_at_ms", "updated_at_ms").returning(models.c.id)
)
INSERT_MODEL_TAG = Prepared(_insert(model_tags, "model_id", "key", "value"))
DELETE_MODEL_TAG = Prepared(
    delete(model_tags).where(model_tags.c.model_id == bindparam("model_id"), model_tags.c.key == bindparam("key"))
)
SET_MODEL_DESCRIPTION = Prepared(
    update(models).where(models.c.id == bindparam("model_id")).values(description=bindparam("description"))
)
TOUCH_MODEL = Prepared(
    update(models).where(models.c.id == bindparam("model_id")).values(updated_at_ms=bindparam("now_ms"))
)

# The columns of a model row, in the order `reads.models_from_rows` reads them.
MODEL_COLUMNS = (
    models.c.id,
    models.c.name,
    models.c.description,
    models.c.last_version,
    models.c.created_at_ms,
    models.c.updated_at_ms,
)


def models_with_children(chosen: Select[Any]) -> CompoundSelect[Any]:
    """The models `chosen` picks (a select of MODEL_COLUMNS), then their tags and aliases.

    Rows come unordered: ('m', *MODEL_COLUMNS) for a model, ('t'|'a', model_id,
    key|alias, value|NULL, NULL|version_number, NULL, NULL) for a child.
    """
    picked = chosen.cte("picked")
    ids = select(picked.c.id)
    number, stamp = models.c.last_version.type, models.c.created_at_ms.type
    return union_all(
        select(_kind("m"), *picked.c),
        select(
            _kind("t"),
            model_tags.c.model_id,
            model_tags.c.key,
            model_tags.c.value,
            null().cast(number),
            null().cast(stamp),
            null().cast(stamp),
        ).where(model_tags.c.model_id.in_(ids)),
        select(
            _kind("a"),
            aliases.c.model_id,
            aliases.c.name,
            null().cast(String),
            aliases.c.version_number,
            null().cast(stamp),
            null().cast(stamp),
        ).where(aliases.c.model_id.in_(ids)),
    )


MODEL_WITH_CHILDREN = Prepared(models_with_children(select(*MODEL_COLUMNS).where(models.c.name == bindparam("name"))))

# -------------------------------------------------------------- versions

# The columns `reads.version_of` reads, in order.
VERSION_COLUMNS = (
    versions.c.id,
    models.c.name,
    versions.c.number,
    versions.c.status,
    versions.c.status_reason,
    versions.c.format,
    versions.c.architecture_json,
    versions.c.signature_json,
    runs.c.run_id,
    versions.c.description,
    versions.c.size_bytes,
    versions.c.sha256,
    versions.c.archived,
    versions.c.created_at_ms,
    versions.c.ready_at_ms,
    versions.c.lineage_json,
)
VERSIONS_FROM = versions.join(models, versions.c.model_id == models.c.id).outerjoin(
    runs, versions.c.run_pk == runs.c.id
)
_BY_NUMBER = (models.c.name == bindparam("model"), versions.c.number == bindparam("number"))


def select_versions(sort_value: Any = None) -> Select[Any]:
    """VERSION_COLUMNS and a sort value (a metric's value, or NULL), for `with_children`."""
    return select(*VERSION_COLUMNS, null().cast(Double) if sort_value is None else sort_value).select_from(
        VERSIONS_FROM
    )


def with_children(chosen: Select[Any]) -> CompoundSelect[Any]:
    """The versions `chosen` picks (a `select_versions()`), then their tags, metrics, aliases and artifacts.

    One statement, so one round trip on PostgreSQL, and no list of ids to
    send back. Rows come unordered: ('v', *VERSION_COLUMNS, sort value) for a
    version, and for each child ('t'|'m'|'a'|'f', version_id, key, ...NULL...,
    the text value in status_reason's place, ...NULL..., the float value last);
    an artifact ('f') has its format as the key and its size, sha256 and
    creation time in the version's size_bytes, sha256 and created_at_ms places.
    """
    picked = chosen.cte("picked")
    ids = select(picked.c.id)
    types = [c.type for c in VERSION_COLUMNS]
    places = {c.key: i for i, c in enumerate(VERSION_COLUMNS)}

    def child(kind: str, table: Table, key: Any, number: Any, **placed: Any) -> Select[Any]:
        at = {places[name]: value for name, value in placed.items()}
        cols: list[Any] = [_kind(kind), table.c.version_id, key]
        cols += [at.get(i, null().cast(t)) for i, t in enumerate(types) if i >= 2]
        cols.append(number)
        return select(*cols).where(table.c.version_id.in_(ids))

    no_number = null().cast(Double)
    return union_all(
        select(_kind("v"), *picked.c),
        child("t", version_tags, version_tags.c.key, no_number, status_reason=version_tags.c.value),
        child("m", version_metrics, version_metrics.c.key, version_metrics.c.value),
        child("a", aliases, aliases.c.name, no_number),
        child(
            "f",
            version_artifacts,
            version_artifacts.c.format,
            no_number,
            size_bytes=version_artifacts.c.size_bytes,
            sha256=version_artifacts.c.sha256,
            created_at_ms=version_artifacts.c.created_at_ms,
        ),
    )


VERSION_BY_NUMBER = Prepared(with_children(select_versions().where(*_BY_NUMBER)))
VERSION_BY_ALIAS = Prepared(
    with_children(
        select_versions().where(
            versions.c.id
            == select(aliases.c.version_id)
            .where(aliases.c.model_id == _model_id(), aliases.c.name == bindparam("alias"))
            .scalar_subquery()
        )
    )
)
LATEST_READY_VERSION = Prepared(
    with_children(
        select_versions()
        .where(models.c.name == bindparam("model"), versions.c.status == READY, versions.c.archived.is_(False))
        .order_by(versions.c.number.desc())
        .limit(1)
    )
)
# (id, status, format, archived, sha256), locked for an update on PostgreSQL.
_VERSION_STATE = (
    select(versions.c.id, versions.c.status, versions.c.format, versions.c.archived, versions.c.sha256)
    .select_from(versions.join(models, versions.c.model_id == models.c.id))
    .where(*_BY_NUMBER)
)
VERSION_STATE = Prepared(_VERSION_STATE)
LOCK_VERSION = Prepared(_VERSION_STATE.with_for_update(of=versions))
VERSION_ALIASES = Prepared(select(aliases.c.name).where(aliases.c.version_id == bindparam("version_id")))
# Whether any version or artifact still holds a blob (one row, or none).
VERSION_WITH_BLOB = Prepared(
    union_all(
        select(versions.c.id).where(versions.c.sha256 == bindparam("sha256")),
        select(version_artifacts.c.version_id).where(version_artifacts.c.sha256 == bindparam("sha256")),
    ).limit(1)
)
INSERT_ARTIFACT = Prepared(_insert(version_artifacts, "version_id", "format", "size_bytes", "sha256", "created_at_ms"))
# (format, sha256) of each artifact of a version.
VERSION_ARTIFACTS = Prepared(
    select(version_artifacts.c.format, version_artifacts.c.sha256).where(
        version_artifacts.c.version_id == bindparam("version_id")
    )
)

# Versions. The row lock this UPDATE takes serializes number allocation per
# model; the unique (model_id, number) index stands behind it.
ALLOCATE_VERSION = Prepared(
    update(models)
    .where(models.c.name == bindparam("model_name"))
    .values(last_version=models.c.last_version + 1, updated_at_ms=bindparam("now_ms"))
    .returning(models.c.id, models.c.last_version)
)
INSERT_VERSION = Prepared(
    _insert(
        versions,
        "model_id",
        "number",
        "status",
        "status_reason",
        "format",
        "architecture_json",
        "signature_json",
        "run_pk",
        "description",
        "archived",
        "size_bytes",
        "sha256",
        "created_at_ms",
        "ready_at_ms",
        "lineage_json",
    ).returning(versions.c.id)
)
INSERT_VERSION_TAG = Prepared(_insert(version_tags, "version_id", "key", "value"))
DELETE_VERSION_TAG = Prepared(
    delete(version_tags).where(
        version_tags.c.version_id == bindparam("version_id"), version_tags.c.key == bindparam("key")
    )
)
INSERT_VERSION_METRIC = Prepared(_insert(version_metrics, "version_id", "model_id", "key", "value"))
SET_VERSION_DESCRIPTION = Prepared(
    update(versions).where(versions.c.id == bindparam("version_id")).values(description=bindparam("description"))
)
FAIL_VERSION = Prepared(
    update(versions)
    .where(versions.c.id == bindparam("version_id"))
    .values(status="FAILED", status_reason=bindparam("reason"))
)
ARCHIVE_VERSION = Prepared(
    update(versions).where(versions.c.id == bindparam("version_id")).values(archived=bindparam("archived"))
)
MARK_READY = Prepared(
    update(versions)
    .where(versions.c.id == bindparam("version_id"))
    .values(
        status=READY, sha256=bindparam("sha256"), size_bytes=bindparam("size_bytes"), ready_at_ms=bindparam("now_ms")
    )
)
RUN_PK = Prepared(select(runs.c.id).where(runs.c.run_id == bindparam("run_id")))
RUN_LATEST_METRICS = Prepared(
    select(latest_metrics.c.key, latest_metrics.c.value).where(latest_metrics.c.run_pk == bindparam("run_pk"))
)

# --------------------------------------------------------------- aliases

# Everything SetAlias decides on, with the model row and the target version's
# row locked: (model_id, version_id, status, archived, current alias target,
# its updated_at_ms); the alias columns are NULL when there is none, and no
# row means no such model or version (MODEL_ID tells which). The version lock
# is the one ArchiveVersion takes, so the two conflict: whichever comes second
# sees the other's commit (the archived flag, or the alias holding the version).
# No-op on SQLite, whose write transactions are serialized from BEGIN IMMEDIATE.
ALIAS_TARGET = Prepared(
    select(
        models.c.id,
        versions.c.id,
        versions.c.status,
        versions.c.archived,
        aliases.c.version_number,
        aliases.c.updated_at_ms,
    )
    .select_from(
        models.join(versions, (versions.c.model_id == models.c.id) & (versions.c.number == bindparam("number")))
        # PostgreSQL locks no row on the nullable side of an outer join, and none is needed.
        .outerjoin(aliases, (aliases.c.model_id == models.c.id) & (aliases.c.name == bindparam("alias")))
    )
    .where(models.c.name == bindparam("model"))
    .with_for_update(of=[models, versions])
)
INSERT_ALIAS = Prepared(_insert(aliases, "model_id", "name", "version_id", "version_number", "updated_at_ms"))
MOVE_ALIAS = Prepared(
    update(aliases)
    .where(aliases.c.model_id == bindparam("model_id"), aliases.c.name == bindparam("alias"))
    .values(version_id=bindparam("version_id"), version_number=bindparam("number"), updated_at_ms=bindparam("now_ms"))
)
ALIAS_NUMBER = Prepared(
    select(aliases.c.version_number).where(
        aliases.c.model_id == bindparam("model_id"), aliases.c.name == bindparam("alias")
    )
)
DELETE_ALIAS = Prepared(
    delete(aliases).where(aliases.c.model_id == bindparam("model_id"), aliases.c.name == bindparam("alias"))
)

# ------------------------------------------------- PostgreSQL, one round trip

# PostgreSQL runs a whole CreateVersion as one statement (data-modifying
# CTEs): a round trip there costs more than all the SQL in it. The model row
# is locked first (the version's number), the counter row last (the event's
# id), as in the step-by-step form SQLite runs. No row when the model does
# not exist. Parameters as for INSERT_VERSION, plus the tags and metrics as
# parallel arrays; returns (number, event id).
CREATE_VERSION_PG = Prepared(
    text("""
WITH model AS (
    UPDATE registered_models SET last_version = last_version + 1, updated_at_ms = :now_ms
    WHERE name = :model
    RETURNING id, last_version
), version AS (
    INSERT INTO model_versions (model_id, number, status, status_reason, format, architecture_json,
        signature_json, run_pk, description, archived, size_bytes, sha256, created_at_ms, ready_at_ms,
        lineage_json)
    SELECT id, last_version, 'PENDING', '', :format, :architecture_json, :signature_json,
        CAST(:run_pk AS bigint), :description, false, 0, '', :now_ms, 0, :lineage_json
    FROM model
    RETURNING id, model_id, number
), tags AS (
    INSERT INTO version_tags (version_id, key, value)
    SELECT version.id, tag.key, tag.value
    FROM version, unnest(CAST(:tag_keys AS text[]), CAST(:tag_values AS text[])) AS tag(key, value)
), metrics AS (
    INSERT INTO version_metrics (version_id, model_id, key, value)
    SELECT version.id, version.model_id, metric.key, metric.value
    FROM version, unnest(CAST(:metric_keys AS text[]), CAST(:metric_values AS float8[])) AS metric(key, value)
), event_id AS (
    UPDATE counters SET value = value + 1
    WHERE name = 'events' AND EXISTS (SELECT FROM version)
    RETURNING value
), event AS (
    INSERT INTO events (id, type, model, version, alias, previous_version, created_at_ms)
    SELECT event_id.value, 'VERSION_CREATED', :model, version.number, '', 0, :now_ms
    FROM event_id, version
)
SELECT version.number, event_id.value FROM version, event_id
""")
)
# An event in one statement: the counter's next value (its row locked to
# commit) and the event row. Returns the id.
APPEND_EVENT_PG = Prepared(
    text("""
WITH event_id AS (
    UPDATE counters SET value = value + 1 WHERE name = 'events' RETURNING value
)
INSERT INTO events (id, type, model, version, alias, previous_version, created_at_ms, deployment, generation)
SELECT value, :type, :model, :version, :alias, :previous_version, :created_at_ms, :deployment, :generation
FROM event_id
RETURNING id
""")
)

# ---------------------------------------------------------------- events

# The counter row's lock orders ids by commit.
NEXT_EVENT_ID = Prepared(
    update(counters).where(counters.c.name == "events").values(value=counters.c.value + 1).returning(counters.c.value)
)
_EVENT_FIELDS = ("type", "model", "version", "alias", "previous_version", "created_at_ms", "deployment", "generation")
INSERT_EVENT = Prepared(_insert(events, "id", *_EVENT_FIELDS))
_EVENT_COLUMNS = (
    events.c.id,
    events.c.type,
    events.c.model,
    events.c.version,
    events.c.alias,
    events.c.previous_version,
    events.c.created_at_ms,
    events.c.deployment,
    events.c.generation,
)
EVENTS_AFTER = Prepared(
    select(*_EVENT_COLUMNS).where(events.c.id > bindparam("after")).order_by(events.c.id).limit(bindparam("limit"))
)
# With a model filter (an IN list, so a Core statement rather than a prepared one).
EVENTS_AFTER_FOR_MODELS = (
    select(*_EVENT_COLUMNS)
    .where(events.c.id > bindparam("after"), events.c.model.in_(bindparam("models", expanding=True)))
    .order_by(events.c.id)
    .limit(bindparam("limit"))
)
LAST_EVENT_ID = Prepared(select(func.coalesce(func.max(events.c.id), 0)))
