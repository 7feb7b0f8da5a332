"""Deployments: what the inference replicas serve, declared once in the registry.

Every change (create, update, delete) is one transaction that writes the
deployment and appends its event, so a replica following WatchEvents sees
each generation exactly once and in order. The generation starts at 1 and
grows by one with each change; an update or delete may name the generation
it was computed from and is ABORTED when another change came first
(optimistic concurrency: read again and retry). An update to the spec already
stored is no change, whatever generation it names: same generation, no event,
so a retried update (its answer lost) lands once.

Targets are checked when written: each must resolve now to a READY version
that is not archived (a missing model, alias or version is NOT_FOUND, one
not READY or archived FAILED_PRECONDITION). What happens to them later (an
alias moved or deleted) is the replicas' to follow and report.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

from maas.common import errors, names
from maas.registry import entities
from maas.registry.db import deployments as rows
from maas.registry.db.database import Database, now_ms
from maas.registry.domain import deployment_spec, events, paging, versions
from maas.registry.domain.filters import bytewise, prefix_range
from maas.registry.domain.models import NAME_PREFIX

# Bounds that keep a reply small: a deployment holds at most this many replicas' reports (each at most
# 34 targets), and a page of a list at most this many deployments (their reports without the targets).
MAX_REPLICAS = 64
MAX_PAGE = 100


def _get(conn: Connection, name: str) -> entities.Deployment:
    found = rows.read(conn, rows.select_deployments().where(rows.deployments.c.name == name))
    if not found:
        raise errors.NotFound(f"deployment '{name}' not found")
    return found[0]


def _check_targets(conn: Connection, spec: entities.DeploymentSpec) -> None:
    """Each target and the shadow resolves now to a READY, unarchived version."""
    refs = [(f"spec.targets[{i}]", t.ref) for i, t in enumerate(spec.targets)]
    if spec.shadow is not None:
        refs.append(("spec.shadow", spec.shadow.ref))
    for field, ref in refs:
        try:
            version = versions.resolve(conn, names.parse_ref(ref))
        except errors.NotFound as exc:
            raise errors.NotFound(f"{field}: {exc.message}") from exc
        if version.status is not entities.VersionStatus.READY:
            raise errors.FailedPrecondition(
                f"{field}: {ref} is version {version.version}, which is {version.status.value}; "
                "a deployment serves READY versions"
            )
        if version.archived:
            raise errors.FailedPrecondition(f"{field}: {ref} is version {version.version}, which is archived")


def _locked(conn: Connection, name: str) -> tuple[int, int]:
    found = rows.find(conn, name, lock=True)
    if found is None:
        raise errors.NotFound(f"deployment '{name}' not found")
    return found


def _check_generation(name: str, generation: int, expected: int) -> None:
    if expected and generation != expected:
        raise errors.Aborted(
            f"deployment '{name}' is at generation {generation}, not {expected}: "
            "it changed since it was read; read it again and retry"
        )


def _expected(value: int) -> int:
    if value < 0:
        raise errors.InvalidArgument("expected_generation: must not be negative")
    return value


class DeploymentService:
    def __init__(self, db: Database, on_event: Callable[[list[entities.Event]], None]) -> None:
        self._db = db
        self._on_event = on_event

    def create(self, name: str, spec: entities.DeploymentSpec) -> entities.Deployment:
        names.model_name(name, "name")
        stored = deployment_spec.spec(spec)

        def tx(conn: Connection, log: events.Log) -> entities.Deployment:
            _check_targets(conn, stored)
            ts = now_ms()
            rows.insert_deployment(conn, name, stored, ts)
            log.append(entities.EventType.DEPLOYMENT_CREATED, "", deployment=name, generation=1)
            return entities.Deployment(name, stored, 1, ts, ts)

        try:
            return events.write(self._db, tx, self._on_event)
        except errors.AlreadyExists as exc:
            raise errors.AlreadyExists(f"deployment '{name}' already exists; update it instead") from exc

    def get(self, name: str) -> entities.Deployment:
        names.model_name(name, "name")
        return self._db.read_conn(lambda conn: _get(conn, name))

    def search(self, name_prefix: str, size: int, token: str) -> entities.Page[entities.Deployment]:
        if name_prefix:
            names.text_value(name_prefix, "name_prefix", 128)
        limit = paging.page_size(size, maximum=MAX_PAGE)
        scope = paging.fingerprint("deployments", name_prefix)
        after = paging.decode(token, scope)
        if name_prefix and not NAME_PREFIX.fullmatch(name_prefix):
            return entities.Page([], "")  # no deployment name has such a prefix
        d = rows.deployments.c
        query = rows.select_deployments().order_by(d.name).limit(limit + 1)
        if name_prefix:
            low, high = prefix_range(name_prefix)
            query = query.where(bytewise(d.name) >= low, bytewise(d.name) < high)
        if after:
            query = query.where(d.name > str(after[0]))

        def tx(conn: Connection) -> entities.Page[entities.Deployment]:
            items = rows.read(conn, query, reported_targets=False)
            next_token = paging.encode([items[limit - 1].name], scope) if len(items) > limit else ""
            return entities.Page(items[:limit], next_token)

        return self._db.read_conn(tx)

    def update(self, name: str, spec: entities.DeploymentSpec, expected_generation: int) -> entities.Deployment:
        names.model_name(name, "name")
        expected = _expected(expected_generation)
        stored = deployment_spec.spec(spec)

        def tx(conn: Connection, log: events.Log) -> entities.Deployment:
            deployment_id, generation = _locked(conn, name)
            before = _get(conn, name)
            if before.spec == stored:
                return before  # nothing to change, whatever generation the caller read
            _check_generation(name, generation, expected)
            _check_targets(conn, stored)
            rows.replace_spec(conn, deployment_id, stored, generation + 1, now_ms())
            log.append(entities.EventType.DEPLOYMENT_UPDATED, "", deployment=name, generation=generation + 1)
            return _get(conn, name)

        return events.write(self._db, tx, self._on_event)

    def delete(self, name: str, expected_generation: int) -> None:
        names.model_name(name, "name")
        expected = _expected(expected_generation)

        def tx(conn: Connection, log: events.Log) -> None:
            deployment_id, generation = _locked(conn, name)
            _check_generation(name, generation, expected)
            rows.delete_deployment(conn, deployment_id)
            log.append(entities.EventType.DEPLOYMENT_DELETED, "", deployment=name, generation=generation)

        events.write(self._db, tx, self._on_event)

    def report(self, deployment: str, status: entities.ReplicaStatus, stopped: bool) -> int:
        """Store (or, when the replica stopped, remove) a replica's report; the deployment's generation."""
        names.model_name(deployment, "deployment")
        checked = deployment_spec.report(status)

        def tx(conn: Connection) -> int:
            found = rows.find(conn, deployment)
            if found is None:
                raise errors.NotFound(f"deployment '{deployment}' not found")
            deployment_id, generation = found
            if stopped:
                rows.remove_report(conn, deployment_id, checked.replica)
                return generation
            if checked.generation > generation:
                raise errors.FailedPrecondition(
                    f"status.generation: {checked.generation} is past deployment '{deployment}''s "
                    f"generation {generation}"
                )
            if rows.replica_count(conn, deployment_id, checked.replica) >= MAX_REPLICAS:
                raise errors.ResourceExhausted(
                    f"deployment '{deployment}' has reports of {MAX_REPLICAS} other replicas; a replica that stops "
                    "removes its report (stopped)"
                )
            rows.store_report(conn, deployment_id, checked, now_ms())
            return generation

        return self._db.write_conn(tx)
