"""What this replica serves of each deployment, reported to the registry (ReportDeploymentStatus).

A report is the generation whose targets the replica serves (or is loading),
each target's resolved version and state (LOADING, READY, FAILED with its
reason), and what it still drains of an earlier layout (DRAINING). It is sent
whenever that changes (coalesced: a burst of changes costs at most two
reports), again on every resync so that `reported_at` stays fresh, and it is
removed (`stopped`) when the replica stops cleanly; `maas deployments show`
lists them. A report that cannot be sent (the registry is down) is sent again
by the next change or resync; serving never waits for one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from maas.common import errors
from maas.common.clients.registry import RegistryClient
from maas.common.loops import Coalescer
from maas.inference.manager import ModelEntry, ModelManager
from maas.v1 import registry_pb2 as rpb

log = logging.getLogger("maas.inference.reports")

MAX_REASON_CHARS = 1000  # the registry's bound on a reason
MAX_TARGETS = 34  # and on a report's targets (16 targets, the shadow, and what drains)
STOP_SECONDS = 3.0  # the most a clean stop spends removing this replica's reports


def target_status(entry: ModelEntry) -> rpb.TargetStatus:
    """One target's state on this replica."""
    status = rpb.TargetStatus(ref=entry.ref(), shadow=entry.shadow)
    current, failure = entry.current, entry.failure
    if entry.loading:
        status.version, status.state = entry.loading, rpb.TARGET_STATE_LOADING
    elif failure is not None and (current is None or failure.version != current.version):
        status.version, status.state = failure.version, rpb.TARGET_STATE_FAILED
        kept = f"; version {current.version} goes on serving" if current is not None else ""
        status.reason = _clip(failure.reason + kept)
    elif current is not None:
        status.version, status.state = current.version, rpb.TARGET_STATE_READY
    elif entry.cold:  # under the memory limit: loaded by its next request
        status.version = entry.resolved.version if entry.resolved is not None else 0
        status.state = rpb.TARGET_STATE_READY
    elif entry.waiting:
        status.state, status.reason = rpb.TARGET_STATE_FAILED, _clip(f"waiting for it in the registry: {entry.waiting}")
    else:
        status.state = rpb.TARGET_STATE_LOADING
    return status


def replica_status(replica: str, generation: int, manager: ModelManager, name: str) -> rpb.ReplicaStatus:
    """What `name` serves here: the targets of `generation` (the layout loading, or serving), then what drains."""
    serving = manager.targets(name)
    upcoming = manager.upcoming.get(name)
    layout = list(upcoming) if upcoming is not None else serving
    targets = [target_status(e) for e in layout]
    draining = [
        (e.ref(), e.current.version, e.shadow)
        for e in serving
        if e.current is not None and not any(e is x for x in layout)
    ]
    draining += [(f"{s.source}/{s.version}", s.version, False) for s in manager.retiring if s.model == name]
    for ref, version, shadow in draining:
        targets.append(rpb.TargetStatus(ref=ref, version=version, state=rpb.TARGET_STATE_DRAINING, shadow=shadow))
    return rpb.ReplicaStatus(replica=replica, generation=generation, targets=targets[:MAX_TARGETS])


class Reporter:
    def __init__(
        self, registry: RegistryClient, replica: str, status: Callable[[str], rpb.ReplicaStatus | None]
    ) -> None:
        self.registry = registry
        self.replica = replica
        self._status = status
        self.reported: set[str] = set()
        """Deployments this replica has a report of in the registry (removed at a clean stop)."""
        self._sending: Coalescer[str] = Coalescer(self._send, "report")
        self._refused = False

    def mark(self, deployment: str) -> None:
        self._sending.mark(deployment)

    async def idle(self) -> None:
        await self._sending.idle()

    async def _send(self, deployment: str) -> None:
        status = self._status(deployment)
        if status is None:
            return
        try:
            await self.registry.report_deployment_status(deployment, status)
        except errors.NotFound:
            self.reported.discard(deployment)  # deleted meanwhile: nothing to report to
            return
        except errors.PermissionDenied as exc:
            if not self._refused:
                self._refused = True
                log.warning(
                    "the registry refuses this replica's reports (%s): MAAS_INFERENCE_REGISTRY_TOKEN needs the "
                    "replica scope; serving goes on",
                    exc.message,
                )
            return
        except errors.MaasError as exc:
            log.info("%s: report not sent (%s); the next change or resync sends it", deployment, exc.message)
            return
        self.reported.add(deployment)

    async def stop(self) -> None:
        """Remove this replica's reports (a clean stop): `maas deployments show` then lists only replicas that serve."""
        await self._sending.stop()
        if not self.reported:
            return
        gone = rpb.ReplicaStatus(replica=self.replica)

        async def remove(deployment: str) -> None:
            try:
                await self.registry.report_deployment_status(deployment, gone, stopped=True)
            except errors.MaasError as exc:
                log.info("%s: report not removed (%s)", deployment, exc.message)

        try:
            await asyncio.wait_for(asyncio.gather(*(remove(d) for d in sorted(self.reported))), STOP_SECONDS)
        except TimeoutError:
            log.info("reports not all removed within %.0fs", STOP_SECONDS)
        self.reported.clear()


def _clip(text: str) -> str:
    text = text.replace("\x00", "")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."
