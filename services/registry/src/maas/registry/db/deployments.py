"""Deployment rows: the statements that read and write them, and their entities.

A deployment is its row (name, generation, options), its target rows in spec
order (the shadow last, marked) and the latest report of each replica. Reads
take the deployments a query picks and then their children in two more
statements, for one deployment or a page alike. Few calls touch deployments
(a change, a replica's report), so these are plain Core statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from maas.registry import entities
from maas.registry.db.schema import (
    DeploymentReplicaRow,
    DeploymentRow,
    DeploymentTargetRow,
    options_from_json,
    options_to_json,
    target_statuses_from_json,
    target_statuses_to_json,
)

deployments = cast(Table, DeploymentRow.__table__)
targets = cast(Table, DeploymentTargetRow.__table__)
replicas = cast(Table, DeploymentReplicaRow.__table__)

_COLUMNS = (
    deployments.c.id,
    deployments.c.name,
    deployments.c.generation,
    deployments.c.options_json,
    deployments.c.created_at_ms,
    deployments.c.updated_at_ms,
)


def select_deployments() -> Select[Any]:
    """The columns `read` takes, for a query to narrow (by name, a page of names)."""
    return select(*_COLUMNS)


def read(conn: Connection, query: Select[Any], *, reported_targets: bool = True) -> list[entities.Deployment]:
    """The deployments `query` (a `select_deployments()`) picks, in its order, with targets and reports
    (without what each replica said of each target unless `reported_targets`)."""
    rows = conn.execute(query).all()
    if not rows:
        return []
    ids = [row[0] for row in rows]
    spec_rows: dict[int, list[Any]] = {}
    for target in conn.execute(
        select(targets.c.deployment_id, targets.c.ref, targets.c.percent, targets.c.shadow)
        .where(targets.c.deployment_id.in_(ids))
        .order_by(targets.c.deployment_id, targets.c.position)
    ):
        spec_rows.setdefault(target[0], []).append(target)
    reports: dict[int, list[entities.ReplicaStatus]] = {}
    for report in conn.execute(
        select(
            replicas.c.deployment_id,
            replicas.c.replica,
            replicas.c.generation,
            replicas.c.targets_json if reported_targets else literal("[]"),
            replicas.c.reported_at_ms,
        )
        .where(replicas.c.deployment_id.in_(ids))
        .order_by(replicas.c.deployment_id, replicas.c.replica)
    ):
        reports.setdefault(report[0], []).append(
            entities.ReplicaStatus(report[1], int(report[2]), target_statuses_from_json(report[3]), int(report[4]))
        )
    return [
        entities.Deployment(
            name=row[1],
            spec=_spec(spec_rows.get(row[0], ()), row[3]),
            generation=int(row[2]),
            created_at_ms=int(row[4]),
            updated_at_ms=int(row[5]),
            replicas=tuple(reports.get(row[0], ())),
        )
        for row in rows
    ]


def _spec(rows: Sequence[Any], options_json: str) -> entities.DeploymentSpec:
    served = tuple(entities.DeploymentTarget(r[1], int(r[2])) for r in rows if not r[3])
    shadow = next((entities.ShadowTarget(r[1], int(r[2])) for r in rows if r[3]), None)
    return entities.DeploymentSpec(served, shadow, options_from_json(options_json))


def find(conn: Connection, name: str, *, lock: bool = False) -> tuple[int, int] | None:
    """(id, generation) of the deployment (None: no such one); `lock` holds its row to the end of the transaction.

    The lock orders changes of one deployment on PostgreSQL; SQLite's write
    transactions are serialized from BEGIN IMMEDIATE.
    """
    query = select(deployments.c.id, deployments.c.generation).where(deployments.c.name == name)
    row = conn.execute(query.with_for_update() if lock else query).first()
    return None if row is None else (int(row[0]), int(row[1]))


def insert_deployment(conn: Connection, name: str, spec: entities.DeploymentSpec, now_ms: int) -> int:
    """The new row's id; the unique name decides between racing creates (AlreadyExists)."""
    deployment_id = conn.execute(
        insert(deployments)
        .values(
            name=name,
            generation=1,
            options_json=options_to_json(spec.options),
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
        )
        .returning(deployments.c.id)
    ).scalar_one()
    _insert_targets(conn, int(deployment_id), spec)
    return int(deployment_id)


def replace_spec(
    conn: Connection, deployment_id: int, spec: entities.DeploymentSpec, generation: int, now_ms: int
) -> None:
    conn.execute(
        update(deployments)
        .where(deployments.c.id == deployment_id)
        .values(generation=generation, options_json=options_to_json(spec.options), updated_at_ms=now_ms)
    )
    conn.execute(delete(targets).where(targets.c.deployment_id == deployment_id))
    _insert_targets(conn, deployment_id, spec)


def _insert_targets(conn: Connection, deployment_id: int, spec: entities.DeploymentSpec) -> None:
    served = [(t.ref, t.weight, False) for t in spec.targets]
    if spec.shadow is not None:
        served.append((spec.shadow.ref, spec.shadow.sample_percent, True))
    conn.execute(
        insert(targets),
        [
            {
                "deployment_id": deployment_id,
                "position": i,
                "ref": ref,
                "model": _model_of(ref),
                "percent": p,
                "shadow": s,
            }
            for i, (ref, p, s) in enumerate(served)
        ],
    )


def _model_of(ref: str) -> str:
    """The model of a canonical ref ('m@alias', 'm/3'); model names hold neither '@' nor '/'."""
    return ref.partition("@")[0].partition("/")[0]


def delete_deployment(conn: Connection, deployment_id: int) -> None:
    """The row; its targets and reports go with it (ON DELETE CASCADE; SQLite runs with foreign_keys=ON)."""
    conn.execute(delete(deployments).where(deployments.c.id == deployment_id))


def store_report(conn: Connection, deployment_id: int, status: entities.ReplicaStatus, now_ms: int) -> None:
    """Insert or replace the replica's report."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(replicas).values(
        deployment_id=deployment_id,
        replica=status.replica,
        generation=status.generation,
        targets_json=target_statuses_to_json(status.targets),
        reported_at_ms=now_ms,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["deployment_id", "replica"],
            set_={
                "generation": stmt.excluded.generation,
                "targets_json": stmt.excluded.targets_json,
                "reported_at_ms": stmt.excluded.reported_at_ms,
            },
        )
    )


def replica_count(conn: Connection, deployment_id: int, other_than: str) -> int:
    """How many replicas other than `other_than` have a report on the deployment."""
    return int(
        conn.execute(
            select(func.count()).where(replicas.c.deployment_id == deployment_id, replicas.c.replica != other_than)
        ).scalar_one()
    )


def remove_report(conn: Connection, deployment_id: int, replica: str) -> None:
    conn.execute(delete(replicas).where(replicas.c.deployment_id == deployment_id, replicas.c.replica == replica))
