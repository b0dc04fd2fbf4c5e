"""What the console's rollout monitor shows: each wave's devices in the operator's terms
(queued, downloading, applying, confirmed, failed, rolled back) and the audit entries of
one rollout. Read-only; built on the job executions the engine keeps up to date."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fleet_tui.domain.jobs import (
    FAILED,
    IN_PROGRESS,
    QUEUED,
    REJECTED,
    SUCCEEDED,
    TIMED_OUT,
)
from fleet_tui.registry.audit import AuditRecord
from fleet_tui.registry.registry import Registry
from fleet_tui.registry.rollouts_store import RolloutRow
from fleet_tui.registry.targets import resolve_targets

PROGRESS_STATES = ("queued", "downloading", "applying", "confirmed", "failed", "rolled back")
# In-progress phases the firmware engine notes (``status_details.phase``) past the download.
APPLYING_PHASES = frozenset({"applying", "confirming", "soaking", "offline after update"})
DETAIL_LIMIT = 5000  # in-progress/failed executions read per wave for the breakdown


@dataclass(slots=True)
class WaveProgress:
    index: int
    name: str
    status: str
    devices: int
    approvals: list[str]
    evidence: dict[str, Any] | None
    counts: dict[str, int] = field(default_factory=dict)  # PROGRESS_STATES -> devices
    failed_by_hardware: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("confirmed", "failed", "rolled back"))


def wave_progress(registry: Registry, rollout: RolloutRow) -> list[WaveProgress]:
    """Per wave, its devices by PROGRESS_STATES. A device the rollback job put back on its
    previous version counts as rolled back in its wave, as does one whose own bootloader
    rolled it back (a crash loop)."""
    job_ids = [w.job_id for w in rollout.waves if w.job_id]
    rollback_id = f"{rollout.id}-rollback"
    counts = registry.jobs.counts([*job_ids, rollback_id])
    reverted = {e.device_id for e in registry.jobs.executions(rollback_id, status=[SUCCEEDED])}
    out: list[WaveProgress] = []
    failed_ids: dict[int, list[str]] = {}
    for w in rollout.waves:
        p = WaveProgress(w.index, w.name, w.status, len(w.device_ids), list(w.approvals),
                         w.evidence, dict.fromkeys(PROGRESS_STATES, 0))
        out.append(p)
        if not w.job_id:
            continue
        c = counts.get(w.job_id, {})
        p.counts["queued"] = c.get(QUEUED, 0)
        p.counts["failed"] = c.get(TIMED_OUT, 0) + c.get(REJECTED, 0)
        for e in registry.jobs.executions(w.job_id, status=[IN_PROGRESS, FAILED, SUCCEEDED],
                                          limit=DETAIL_LIMIT):
            details = e.status_details or {}
            if e.device_id in reverted:
                p.counts["rolled back"] += 1
            elif e.status == SUCCEEDED:
                p.counts["confirmed"] += 1
            elif e.status == FAILED:
                key = "rolled back" if "rolled back" in str(details.get("reason")) else "failed"
                p.counts[key] += 1
                failed_ids.setdefault(w.index, []).append(e.device_id)
            elif str(details.get("phase", "")) in APPLYING_PHASES:
                p.counts["applying"] += 1
            else:
                p.counts["downloading"] += 1
    if failed_ids:
        hardware = {r.id: r.hardware_rev or "?" for r in resolve_targets(
            registry, device_ids=[d for ids in failed_ids.values() for d in ids])}
        for index, ids in failed_ids.items():
            out[index].failed_by_hardware = dict(Counter(hardware.get(d, "?") for d in ids))
    return out


def rollout_audit(registry: Registry, rollout: RolloutRow, limit: int = 8
                  ) -> list[AuditRecord]:
    """The newest audit entries about this rollout and its jobs, newest first."""
    entries = registry.audit.entries(target=rollout.id, newest_first=True, limit=limit)
    for w in rollout.waves:
        if w.job_id:
            entries += registry.audit.entries(target=w.job_id, newest_first=True, limit=limit)
    entries.sort(key=lambda e: e.id, reverse=True)
    return entries[:limit]
