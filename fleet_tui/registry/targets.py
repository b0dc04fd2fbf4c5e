"""Resolving a job's or rollout's targets (a group, a query or a list of ids) to the device
facts that planning and capability gating need, in a few statements for any fleet size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from fleet_tui.registry.models import SOURCE_OPERATOR, SOURCE_REPORTED
from fleet_tui.registry.registry import DEVICE, TAG, Registry

CHUNK = 5000


@dataclass(frozen=True, slots=True)
class TargetRow:
    id: str
    firmware_version: str | None
    hardware_rev: str | None
    tags: dict[str, str] = field(default_factory=dict)  # operator tags asked for
    known: bool = True  # False: an id given by hand that the registry does not have


def resolve_targets(
    registry: Registry, *, group: str | None = None, where: str | None = None,
    device_ids: Sequence[str] | None = None, tag_keys: Sequence[str] = (),
) -> list[TargetRow]:
    """The target devices in id order. With ``device_ids`` the ids are taken as given (in
    that order); ids the registry does not know come back with ``known=False``."""
    cols = (DEVICE.c.id, DEVICE.c.firmware_version, DEVICE.c.hardware_rev)
    rows: dict[str, tuple[str | None, str | None]] = {}
    with registry.engine.connect() as conn:
        if device_ids is not None:
            for i in range(0, len(device_ids), CHUNK):
                chunk = list(device_ids[i:i + CHUNK])
                for r in conn.execute(sa.select(*cols).where(DEVICE.c.id.in_(chunk))):
                    rows[r.id] = (r.firmware_version, r.hardware_rev)
            order = list(dict.fromkeys(device_ids))
        else:
            pred = registry.device_filter(group=group, where=where)
            for r in conn.execute(sa.select(*cols).where(pred).order_by(DEVICE.c.id)):
                rows[r.id] = (r.firmware_version, r.hardware_rev)
            order = list(rows)
        tags: dict[str, dict[str, str]] = {}
        if tag_keys and rows:
            ids = list(rows)
            for i in range(0, len(ids), CHUNK):
                stmt = sa.select(TAG.c.device_id, TAG.c.source, TAG.c.key, TAG.c.value).where(
                    TAG.c.device_id.in_(ids[i:i + CHUNK]), TAG.c.key.in_(list(tag_keys)),
                    TAG.c.source.in_([SOURCE_OPERATOR, SOURCE_REPORTED]))
                for r in conn.execute(stmt):
                    bucket = tags.setdefault(r.device_id, {})
                    # An operator tag wins over a self-reported one of the same name.
                    if r.source == SOURCE_OPERATOR or r.key not in bucket:
                        bucket[r.key] = r.value
    return [
        TargetRow(d, rows[d][0], rows[d][1], tags.get(d, {})) if d in rows
        else TargetRow(d, None, None, {}, known=False)
        for d in order
    ]
