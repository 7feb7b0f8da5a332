"""Prebuilt Core statements for the hot paths.

Built once and executed on the session's connection with plain parameter
dicts: no ORM unit of work, no statement construction or cache-key work per
call. The ORM rows in `schema` stay the source of truth for the tables.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update

from maas.registry.db.schema import (
    CounterRow,
    EventRow,
    LatestMetricRow,
    ModelRow,
    RunRow,
    VersionMetricRow,
    VersionRow,
    VersionTagRow,
)

models = cast(Table, ModelRow.__table__)
versions = cast(Table, VersionRow.__table__)
version_tags = cast(Table, VersionTagRow.__table__)
version_metrics = cast(Table, VersionMetricRow.__table__)
runs = cast(Table, RunRow.__table__)
latest_metrics = cast(Table, LatestMetricRow.__table__)
events = cast(Table, EventRow.__table__)
counters = cast(Table, CounterRow.__table__)

# Versions. The row lock this UPDATE takes serializes number allocation per
# model; the unique (model_id, number) index stands behind it.
ALLOCATE_VERSION = (
    update(models)
    .where(models.c.name == bindparam("model_name"))
    .values(last_version=models.c.last_version + 1, updated_at_ms=bindparam("now_ms"))
    .returning(models.c.id, models.c.last_version)
)
INSERT_VERSION = insert(versions).returning(versions.c.id)
INSERT_VERSION_TAG = insert(version_tags)
INSERT_VERSION_METRIC = insert(version_metrics)
RUN_PK = select(runs.c.id).where(runs.c.run_id == bindparam("run_id"))
RUN_LATEST_METRICS = select(latest_metrics.c.key, latest_metrics.c.value).where(
    latest_metrics.c.run_pk == bindparam("run_pk")
)

# Events: the counter row's lock orders ids by commit.
NEXT_EVENT_ID = (
    update(counters).where(counters.c.name == "events").values(value=counters.c.value + 1).returning(counters.c.value)
)
INSERT_EVENT = insert(events)
