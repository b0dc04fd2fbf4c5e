"""The SQL shapes the compiler picks for index use (the answers are tested in test_query)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import SQLModel

from fleet_tui.domain.query import GroupQuery
from fleet_tui.registry.engine import create_registry_engine
from fleet_tui.registry.registry import Registry


def _plan(text: str) -> list[str]:
    engine = create_registry_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    registry = Registry(engine)
    stmt = sa.select(sa.func.count()).select_from(
        GroupQuery.parse(text).compile_ids(registry.target).subquery())
    sql = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}",  # sql-reviewed: compiled
                                    tuple(sql.params[n] for n in sql.positiontup or ()))
        return [r[3] for r in rows]


def test_an_and_with_a_tag_condition_reads_that_tag_range_in_place() -> None:
    plan = _plan('location = "factory-A" and firmware_version < 2.2.0 '
                 'and not tag.deployment_ring in ("canary")')
    # The location range drives and each of its devices is looked up by key; only the
    # negated condition's (small) id set is listed in a temporary index.
    assert plan[0].startswith("SEARCH driver USING COVERING INDEX ix_tag_lookup")
    assert plan[1].startswith("SEARCH device USING PRIMARY KEY")
    assert sum("LIST SUBQUERY" in step for step in plan) == 1


def test_an_and_without_a_positive_tag_condition_filters_the_device_table() -> None:
    plan = _plan('firmware_version < 2.2.0 and not tag.deployment_ring = "canary"')
    assert not any("driver" in step for step in plan)
