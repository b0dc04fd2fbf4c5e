"""The Registry: devices, tags, groups, shadows, releases and the audit log.

This is the only place that writes SQL. Everything goes through SQLAlchemy Core with bound
parameters; bulk writes are batched (one ``executemany`` per table per batch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from fleet_tui.domain.query import (
    DeviceRecord,
    GroupMatcher,
    GroupQuery,
    Or,
    QuerySyntaxError,
    SqlTarget,
    compile_ids,
    reported_attributes,
)
from fleet_tui.domain.shadow import stored_in_sync as shadow_in_sync
from fleet_tui.domain.version import VersionError, parse_version, version_key
from fleet_tui.registry import migrate
from fleet_tui.registry.audit import AuditLog, locked_transaction
from fleet_tui.registry.automation_store import AutomationStore
from fleet_tui.registry.bulk_load import (
    TAG_COLUMNS,
    NewDevice,
    bulk_insert,
    device_batches,
    device_writer,
    prefetch,
    tag_tuples,
)
from fleet_tui.registry.engine import (
    WRITE_OPTION,
    create_registry_engine,
    sqlite_writer,
    write_transaction,
)
from fleet_tui.registry.errors import Conflict, NotFound, RegistryError
from fleet_tui.registry.jobs_store import JobStore
from fleet_tui.registry.leases import Leases, check_fence
from fleet_tui.registry.models import (
    SOURCE_OPERATOR,
    SOURCE_REPORTED,
    Device,
    Group,
    GroupMember,
    MetricBucket,
    Release,
    Shadow,
    Tag,
)
from fleet_tui.registry.rollouts_store import RolloutStore
from fleet_tui.registry.sqlite_batch import dumps as batch_json
from fleet_tui.registry.sqlite_batch import json_rows, json_values

DEVICE = Device.__table__  # type: ignore[attr-defined]
TAG = Tag.__table__  # type: ignore[attr-defined]
GROUP = Group.__table__  # type: ignore[attr-defined]
MEMBER = GroupMember.__table__  # type: ignore[attr-defined]
SHADOW = Shadow.__table__  # type: ignore[attr-defined]
RELEASE = Release.__table__  # type: ignore[attr-defined]
BUCKET = MetricBucket.__table__  # type: ignore[attr-defined]

GROUP_KINDS = ("static", "dynamic", "folder")
ORDER_COLUMNS = ("id", "firmware_version", "hardware_rev", "online", "health", "last_seen")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    hardware_rev: str | None
    firmware_version: str | None
    online: bool
    last_seen: float | None
    health: str | None
    groups: tuple[str, ...] = ()  # static groups it is a member of, by name
    in_sync: bool | None = None  # classic shadow's delta empty; None: no shadow yet


@dataclass(slots=True)
class GroupNode:
    id: int
    name: str
    kind: str
    query: str | None
    parent_id: int | None
    description: str
    children: list[GroupNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _PageGroups:
    nodes: dict[str, GroupNode]  # the snapshot of group definitions this was built from
    depth: dict[str, int]
    matcher: GroupMatcher | None


@dataclass(frozen=True, slots=True)
class _PageLookups:
    """A page's extras by device ids (one parameter ``ids``): the classic shadows, the
    static groups, the tags."""

    shadows: sa.Select[Any]
    members: sa.Select[Any]
    tags: sa.Select[Any]

    @classmethod
    def build(cls, dialect: str) -> _PageLookups:
        def among(col: sa.Column[Any]) -> ColumnElement[bool]:
            if dialect == "sqlite":
                # A JSON array: one cached statement for any page size.
                return col.in_(json_values("ids"))
            return col.in_(sa.bindparam("ids", expanding=True))

        return cls(
            shadows=sa.select(SHADOW.c.thing_id, SHADOW.c.document).where(
                among(SHADOW.c.thing_id), SHADOW.c.name == ""),
            members=sa.select(MEMBER.c.device_id, GROUP.c.name)
            .join(GROUP, GROUP.c.id == MEMBER.c.group_id).where(among(MEMBER.c.device_id)),
            tags=sa.select(TAG.c.device_id, TAG.c.source, TAG.c.key, TAG.c.value).where(
                among(TAG.c.device_id)),
        )


def _json_document(text: str) -> Any:
    """A stored JSON document as the JSON column type reads it (json.loads), faster."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what only json.loads reads: NaN, huge integers
        return json.loads(text)


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    version: str
    url: str
    sha256: str
    size: int
    hardware_revs: list[str]
    desired_keys: list[str]
    notes: str


def tag_rows(device_id: str, source: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Tag rows that represent ``values``, as column dicts."""
    return [dict(zip(TAG_COLUMNS, t, strict=True)) for t in tag_tuples(device_id, source, values)]


@lru_cache(maxsize=1024)
def _parsed_query(text: str) -> GroupQuery | None:
    """A stored group's query, parsed once (None: it no longer parses; it matches nothing)."""
    try:
        return GroupQuery.parse(text)
    except QuerySyntaxError:
        return None


class Registry:
    """Access to the fleet registry. Thread-safe as far as the SQLAlchemy engine is."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.target = SqlTarget(DEVICE, TAG, self.dialect)
        self._groups: dict[str, GroupNode] | None = None
        self._groups_loaded = 0.0
        self._known_keys: set[str] | None = None
        self._count_statements: dict[Any, sa.Select[Any]] = {}
        self._page_groups_cache: _PageGroups | None = None
        self._count_sql: dict[int, tuple[Any, str, tuple[str, ...], dict[str, Any]]] = {}
        self._page_lookups = _PageLookups.build(self.dialect)

    @classmethod
    def open(cls, url: str, *, migrate_schema: bool = True) -> Registry:
        engine = create_registry_engine(url)
        if migrate_schema:
            migrate.upgrade(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self, *, bulk_load: bool = False) -> Iterator[Connection]:
        """One writing transaction (on SQLite it takes the write lock at BEGIN, see
        engine.write_transaction). ``bulk_load`` (imports) skips SQLite's per-row foreign-key
        lookups: every tag row an import writes belongs to a device the same batch inserts,
        so the check only cost time (a quarter of the insert work). PostgreSQL keeps its
        checks; COPY makes them cheap there."""
        if not (bulk_load and self.dialect == "sqlite"):
            with write_transaction(self.engine) as conn:
                yield conn
            return
        with sqlite_writer(self.engine), self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})  # BEGIN IMMEDIATE
            raw = conn.connection.dbapi_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys=OFF")  # only outside a transaction
            try:
                with conn.begin():
                    yield conn
            finally:
                raw.execute("PRAGMA foreign_keys=ON")
                # The import filled this connection's page cache with the pages it wrote;
                # deep reads on it ran up to 1.9x slower than on a fresh connection (a
                # page at offset 250k of 1M devices) until the cache was released.
                raw.execute("PRAGMA shrink_memory")

    # ------------------------------------------------------------------ devices

    def add_devices(
        self, devices: Iterable[NewDevice], *, conn: Connection | None = None, batch: int = 20_000
    ) -> int:
        """Insert devices with their tags in batches; one transaction. Duplicates -> Conflict."""
        if conn is None:
            with self.transaction() as own:
                return self.add_devices(devices, conn=own, batch=batch)
        # PostgreSQL builds the secondary indexes of an empty registry once at the end
        # faster than it maintains them row by row during COPY. SQLite keeps them: its
        # sorted CREATE INDEX over 5M tag rows cost twice the in-place inserts (1M devices:
        # 10.4 s against 4.5 s CPU).
        rebuild = (self.dialect != "sqlite" and self._empty(conn)
                   and self._drop_secondary_indexes(conn))
        writer = device_writer(conn)
        writer.open(conn)
        count = 0
        try:
            # The prefetch thread builds and encodes the rows while this one inserts.
            for encoded in prefetch(writer.encode(b) for b in device_batches(devices, batch)):
                try:
                    with conn.begin_nested():
                        writer.write_devices(conn, encoded)
                except (sa.exc.IntegrityError, _dbapi_integrity_error(conn)):
                    raise Conflict(
                        f"device {self._duplicate(conn, encoded.ids)!r} already exists"
                    ) from None
                writer.write_tags(conn, encoded)
                count += len(encoded.ids)
        except BaseException:
            # The transaction is rolled back (its temporary tables with it); an error from
            # the clean-up must not hide the one that stopped the import.
            with suppress(Exception):
                writer.close(conn)
            raise
        writer.close(conn)
        if rebuild:
            for index in (*DEVICE.indexes, *TAG.indexes):
                index.create(conn)
        return count

    @staticmethod
    def _empty(conn: Connection) -> bool:
        return conn.execute(sa.select(DEVICE.c.id).limit(1)).first() is None

    @staticmethod
    def _drop_secondary_indexes(conn: Connection) -> bool:
        for index in (*DEVICE.indexes, *TAG.indexes):
            index.drop(conn)
        return True

    @staticmethod
    def _duplicate(conn: Connection, ids: Sequence[str]) -> str | None:
        seen: set[str] = set()
        for dev_id in ids:
            if dev_id in seen:
                return dev_id
            seen.add(dev_id)
        return conn.execute(sa.select(DEVICE.c.id).where(DEVICE.c.id.in_(ids)).limit(1)).scalar()

    def get_device(self, device_id: str) -> DeviceRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(DEVICE).where(DEVICE.c.id == device_id)).first()
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            tags = conn.execute(
                sa.select(TAG.c.source, TAG.c.key, TAG.c.value).where(TAG.c.device_id == device_id)
            ).all()
        return DeviceRecord(
            id=row.id,
            firmware_version=row.firmware_version,
            hardware_rev=row.hardware_rev,
            online=bool(row.online),
            health=row.health,
            tags={t.key: t.value for t in tags if t.source == SOURCE_OPERATOR},
            reported={t.key: t.value for t in tags if t.source == SOURCE_REPORTED},
        )

    def set_operator_tags(self, device_id: str, tags: Mapping[str, str | None]) -> None:
        """Set operator tags; a None value removes the tag."""
        with self.transaction() as conn:
            self._require_device(conn, device_id)
            for key, value in tags.items():
                conn.execute(
                    TAG.delete().where(
                        TAG.c.device_id == device_id,
                        TAG.c.source == SOURCE_OPERATOR,
                        TAG.c.key == key,
                    )
                )
                if value is not None:
                    conn.execute(TAG.insert(), tag_rows(device_id, SOURCE_OPERATOR, {key: value}))

    def apply_reported(
        self, updates: Mapping[str, Mapping[str, Any]], conn: Connection | None = None
    ) -> None:
        """Mirror reported states (full current ``reported`` per device) into the registry."""
        if conn is None:
            with self.transaction() as own:
                return self.apply_reported(updates, own)
        if not updates:
            return None
        lite = self.dialect == "sqlite"
        # Device rows in id order, before the tags: see record_ingest. (SQLite has one
        # writer at a time; there the order does not matter and the batch is not sorted.)
        ids = list(updates) if lite else sorted(updates)
        self._ensure_devices(conn, ids)
        versions: list[dict[str, Any]] = []
        for device_id in ids:
            reported = updates[device_id]
            fw = reported.get("firmware_version")
            hw = reported.get("hardware_rev")
            versions.append({
                "b_id": device_id,
                "b_fw": fw if isinstance(fw, str) else None,
                "b_key": version_key(fw) if isinstance(fw, str) else None,
                "b_hw": hw if isinstance(hw, str) else None,
            })
        # Keep what the device did not report (COALESCE), in one executemany.
        if lite:
            batch = [tuple(v.values()) for v in versions]
            conn.execute(_JSON_UPDATE_VERSIONS, {"rows": orjson.dumps(batch).decode()})
            # the ids as one JSON parameter: no expanding IN with a bind per device
            conn.execute(_JSON_DELETE_REPORTED, {"rows": orjson.dumps(ids).decode()})
        else:
            conn.execute(
                DEVICE.update()
                .where(DEVICE.c.id == sa.bindparam("b_id"))
                .values(
                    firmware_version=sa.func.coalesce(sa.bindparam("b_fw"),
                                                      DEVICE.c.firmware_version),
                    fw_key=sa.func.coalesce(sa.bindparam("b_key"), DEVICE.c.fw_key),
                    hardware_rev=sa.func.coalesce(sa.bindparam("b_hw"), DEVICE.c.hardware_rev),
                ),
                versions,
            )
            conn.execute(
                TAG.delete().where(TAG.c.source == SOURCE_REPORTED, TAG.c.device_id.in_(ids))
            )
        rows: list[tuple[Any, ...]] = []
        for device_id in ids:
            rows.extend(tag_tuples(device_id, SOURCE_REPORTED,
                                   reported_attributes(updates[device_id])))
        bulk_insert(conn, TAG, TAG_COLUMNS, rows)
        return None

    def _ensure_devices(self, conn: Connection, ids: Sequence[str]) -> None:
        """Register devices first seen on the wire, in one statement."""
        if ids:
            now = time.time()
            if self.dialect == "sqlite":
                rows = orjson.dumps([(i, False, now) for i in ids]).decode()
                conn.execute(_JSON_ENSURE_DEVICES, {"rows": rows})
                return
            conn.execute(
                _insert_ignore(self.dialect, DEVICE),
                [{"id": i, "online": False, "created_at": now} for i in ids],
            )

    def set_presence(
        self, updates: Sequence[tuple[str, bool, float]], conn: Connection | None = None
    ) -> None:
        """Record (device, online, last_seen) for a batch of devices."""
        self.record_ingest(updates, (), conn)

    def set_health(
        self,
        updates: Sequence[tuple[str, str | None, dict[str, Any] | None]],
        conn: Connection | None = None,
    ) -> None:
        """Record (device, health state, latest telemetry) for a batch of devices."""
        self.record_ingest((), updates, conn)

    def record_ingest(
        self,
        presence: Sequence[tuple[str, bool, float]],
        health: Sequence[tuple[str, str | None, dict[str, Any] | None]],
        conn: Connection | None = None,
    ) -> None:
        """One ingest flush: (device, online, last_seen) and (device, health state, latest
        telemetry), in one transaction that updates each device row once, in id order.

        Every writer of device rows (each worker's ingest flush, a shadow batch mirroring
        reported state) takes their locks in id order in one pass, so two of them never
        wait on each other in a cycle (PostgreSQL aborted one as a deadlock when a flush
        updated presence and then health in arrival order). A device first seen here is
        registered."""
        if conn is None:
            with self.transaction() as own:
                return self.record_ingest(presence, health, own)
        rows: dict[str, dict[str, Any]] = {}
        for d, online, ts in presence:
            rows[d] = {**_NO_INGEST, "b_id": d, "b_p": True, "b_online": online, "b_ts": ts}
        for d, state, telemetry in health:
            row = rows.get(d) or {**_NO_INGEST, "b_id": d}
            rows[d] = {**row, "b_h": True, "b_health": state, "b_tel": telemetry}
        if not rows:
            return None
        ids = sorted(rows)
        if presence:
            self._ensure_devices(conn, sorted({d for d, _, _ in presence}))
        if self.dialect == "sqlite":  # one statement, not a step per row (sqlite_batch)
            conn.execute(_JSON_INGEST_UPDATE, {"rows": batch_json(
                [[rows[d][k] for k in _INGEST_FIELDS] for d in ids])})
            return None
        conn.execute(_INGEST_UPDATE, [rows[d] for d in ids])
        return None

    def _require_device(self, conn: Connection, device_id: str) -> None:
        if conn.execute(sa.select(DEVICE.c.id).where(DEVICE.c.id == device_id)).first() is None:
            raise NotFound(f"no device {device_id!r}")

    def parse_query(self, text: str) -> GroupQuery:
        """Parse ``text``, refusing bare names that no device reports (with a suggestion)."""
        if self._known_keys is not None:
            try:
                return GroupQuery.parse(text, self._known_keys)
            except QuerySyntaxError as err:
                if "unknown field" not in err.message:
                    raise
        # A miss may be a key reported since the cache was filled: look again before failing.
        self._known_keys = self.known_reported_keys()
        return GroupQuery.parse(text, self._known_keys)

    def known_reported_keys(self) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(TAG.c.key).where(TAG.c.source == SOURCE_REPORTED).distinct()
            ).scalars()
            return set(rows)

    def device_filter(
        self, *, group: str | None = None, where: str | None = None
    ) -> ColumnElement[bool]:
        """The predicate over the device table for a group and/or a query."""
        preds: list[ColumnElement[bool]] = []
        if group is not None:
            preds.append(self.group_predicate(group))
        if where:
            preds.append(GroupQuery.parse(where).compile(self.target))
        return sa.and_(sa.true(), *preds)

    def list_devices(
        self,
        *,
        group: str | None = None,
        where: str | None = None,
        offset: int = 0,
        limit: int | None = 50,
        order_by: str = "id",
        descending: bool = False,
    ) -> list[DeviceRow]:
        """A page of devices (ordered, with ``id`` as the tie-breaker)."""
        if order_by not in ORDER_COLUMNS:
            raise RegistryError(f"cannot sort by {order_by!r}: use one of {ORDER_COLUMNS}")
        stmt = self._page_statement(group, where, order_by, descending, limit is not None)
        params = {"page_offset": offset, "page_limit": limit}
        nodes = self._load_groups()  # its own connection: before this one (SQLite :memory:)
        if self.dialect == "sqlite":
            rows, groups, in_sync = self._sqlite_page(stmt, params, nodes)
        else:
            with self.engine.connect() as conn:
                def fetch(query: Any, values: Mapping[str, Any]) -> Sequence[Any]:
                    return conn.execute(query, values).all()
                rows = fetch(stmt, params)
                groups, in_sync = self._page_extras(fetch, rows, nodes)
        return [
            DeviceRow(r[0], r[1], r[2], bool(r[3]), r[4], r[5], tuple(groups.get(r[0], ())),
                      in_sync.get(r[0]))
            for r in rows
        ]

    def _page_statement(self, group: str | None, where: str | None, order_by: str,
                        descending: bool, limited: bool) -> sa.Select[Any]:
        """The SELECT of a page of devices, offset and limit bound per call. Cached like the
        count statements (a group's by the snapshot of group definitions it was built
        from)."""
        if group is not None:
            self._load_groups()
        key = ("page", group, group and self._groups_loaded, where, order_by, descending,
               limited)
        cached = self._count_statements.get(key)
        if cached is not None:
            return cached
        col = DEVICE.c.fw_key if order_by == "firmware_version" else DEVICE.c[order_by]
        order = [col.desc() if descending else col.asc()]
        if order_by != "id":
            order.append(DEVICE.c.id.desc() if descending else DEVICE.c.id.asc())
        columns = (DEVICE.c.id, DEVICE.c.hardware_rev, DEVICE.c.firmware_version,
                   DEVICE.c.online, DEVICE.c.last_seen, DEVICE.c.health)
        lite = self.dialect == "sqlite"
        page: sa.Select[Any] = (
            sa.select(*((DEVICE.c.id,) if lite else columns))
            .where(self.device_filter(group=group, where=where))
            .order_by(*order)
            .offset(sa.bindparam("page_offset", type_=sa.Integer))
        )
        if limited:
            page = page.limit(sa.bindparam("page_limit", type_=sa.Integer))
        if lite:
            # The page's ids first, from the narrowest index that has them in order
            # (ix_device_id for the id order: OFFSET steps over its small entries, not
            # over whole rows of the table clustered on id), then those rows by key.
            page = sa.select(*columns).where(DEVICE.c.id.in_(page)).order_by(*order)
        self._cache_statement(key, page)
        return page

    def _sqlite_page(self, stmt: sa.Select[Any], params: Mapping[str, Any],
                     nodes: dict[str, GroupNode]
                     ) -> tuple[Sequence[Any], dict[str, list[str]], dict[str, bool]]:
        """A page and its extras on SQLite: the compiled statements on the pooled driver
        connection, in one read transaction. SQLAlchemy's execution machinery around the
        four statements cost more than SQLite's own work for them (a page at offset 250k
        of 1M devices: 4.8 ms against 2.2 ms for the page's SELECT alone)."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute("BEGIN")  # the page and its extras from one snapshot
                try:
                    def fetch(query: Any, values: Mapping[str, Any]) -> Sequence[Any]:
                        sql, names, defaults = self._sqlite_sql(query)
                        cursor.execute(sql, [values[n] if n in values else defaults[n]
                                             for n in names])
                        return cursor.fetchall()
                    rows = fetch(stmt, params)
                    groups, in_sync = self._page_extras(fetch, rows, nodes)
                finally:
                    cursor.execute("ROLLBACK")
            finally:
                cursor.close()
        finally:
            raw.close()
        return rows, groups, in_sync

    def _page_groups(self, nodes: dict[str, GroupNode]) -> _PageGroups:
        """What a page needs to name its devices' groups, built once per snapshot of the
        group definitions: the dynamic groups' queries, ready to test a page of devices in
        memory (in SQL each query's subquery ran over the whole fleet: 100 ms a page at
        100k devices; in memory a page costs the same at any fleet size), and each group's
        depth in the tree."""
        cached = self._page_groups_cache
        if cached is not None and cached.nodes is nodes:
            return cached
        by_id = {n.id: n for n in nodes.values()}
        depth: dict[str, int] = {}
        for node in nodes.values():
            d, parent = 0, node.parent_id
            while parent is not None and parent in by_id and d < len(nodes):
                d, parent = d + 1, by_id[parent].parent_id
            depth[node.name] = d
        dynamic = [(n.name, q) for n in nodes.values()
                   if n.kind == "dynamic" and n.query and (q := _parsed_query(n.query))]
        matcher = GroupMatcher(dynamic) if dynamic else None
        self._page_groups_cache = _PageGroups(nodes, depth, matcher)
        return self._page_groups_cache

    def _page_extras(self, fetch: Callable[[Any, Mapping[str, Any]], Sequence[Any]],
                     rows: Sequence[Any], nodes: dict[str, GroupNode]
                     ) -> tuple[dict[str, list[str]], dict[str, bool]]:
        """The groups and shadow convergence of one page of devices (rows of id,
        hardware_rev, firmware_version, online, last_seen, health), read with ``fetch``:
        three indexed lookups and the in-memory query evaluator over that page only, so a
        1M-device table pays for the rows it shows. A device's groups are its most specific
        ones (the deepest static or dynamic groups it belongs to), by name."""
        groups: dict[str, list[str]] = {}
        in_sync: dict[str, bool] = {}
        if not rows:
            return groups, in_sync
        ids = [r[0] for r in rows]
        # SQLite gets the ids as one JSON array (see _page_lookups), others a list.
        page_ids = {"ids": orjson.dumps(ids).decode() if self.dialect == "sqlite" else ids}
        lookups = self._page_lookups
        for thing, data in fetch(lookups.shadows, page_ids):
            if isinstance(data, str):  # the driver connection's raw JSON text
                data = _json_document(data)
            if isinstance(data, dict) and data.get("exists", True):
                in_sync[thing] = shadow_in_sync(data)
        page = self._page_groups(nodes)
        found: dict[str, list[str]] = {}
        for device_id, name in fetch(lookups.members, page_ids):
            found.setdefault(device_id, []).append(name)
        if page.matcher is not None:
            # The page's rows are its devices' records but for their tags.
            records = {r[0]: DeviceRecord(r[0], r[2], r[1], bool(r[3]), r[5]) for r in rows}
            for device_id, source, key, value in fetch(lookups.tags, page_ids):
                rec = records[device_id]
                (rec.tags if source == SOURCE_OPERATOR else rec.reported)[key] = value
            for record in records.values():
                names = page.matcher.matching(record)
                if names:
                    found.setdefault(record.id, []).extend(names)
        depth = page.depth
        for device_id, names in found.items():
            deepest = max(depth.get(n, 0) for n in names)
            groups[device_id] = sorted(n for n in names if depth.get(n, 0) == deepest)
        return groups, in_sync

    def count_devices(self, *, group: str | None = None, where: str | None = None) -> int:
        if group is None and where:
            return self._count(self._query_count_statement(where))
        if group is not None and not where:
            return self._count(self._group_count_statement(group))
        stmt = sa.select(sa.func.count()).select_from(DEVICE).where(
            self.device_filter(group=group, where=where)
        )
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def _query_count_statement(self, where: str) -> sa.Select[Any]:
        # A query's text fully determines its count statement. Building the statement and
        # SQLAlchemy's cache key for it cost ~0.4 ms a call, more than SQLite's indexed
        # count on a 1M-device fleet; a reused statement keeps its memoized cache key.
        stmt = self._count_statements.get(where)
        if stmt is None:
            ids = GroupQuery.parse(where).compile_ids(self.target).subquery()
            stmt = sa.select(sa.func.count()).select_from(ids)
            self._cache_statement(where, stmt)
        return stmt

    def _group_count_statement(self, group: str) -> sa.Select[Any]:
        # Count the id set itself: a tag condition then never touches the device table.
        # Keyed by the snapshot of group definitions it was built from (reloaded every 2 s
        # at most, and at once after this process's writes), so it is never stale.
        self._load_groups()
        key = (self._groups_loaded, group)
        stmt = self._count_statements.get(key)
        if stmt is None:
            stmt = sa.select(sa.func.count()).select_from(self.group_ids(group).subquery())
            self._cache_statement(key, stmt)
        return stmt

    def _cache_statement(self, key: Any, stmt: sa.Select[Any]) -> None:
        if len(self._count_statements) >= 256:
            self._count_statements.clear()
            self._count_sql.clear()
        self._count_statements[key] = stmt

    def _count(self, stmt: sa.Select[Any]) -> int:
        """Run a cached count statement.

        On SQLite, SQLAlchemy's connection, explicit BEGIN and ROLLBACK around one indexed
        count cost as much as the count itself on a 1M-device fleet; a single SELECT on the
        pooled driver connection (autocommit: its own read transaction) needs none of it.
        The SQL is still what SQLAlchemy compiled, with bound parameters.
        """
        if self.dialect != "sqlite":
            with self.engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())
        sql, names, defaults = self._sqlite_sql(stmt)
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, [defaults[n] for n in names])
                row = cursor.fetchone()
                assert row is not None  # count(*) always returns one row
                return int(row[0])
            finally:
                cursor.close()
        finally:
            raw.close()

    def _sqlite_sql(self, stmt: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """A cached statement's SQLite SQL, its parameter names in order and their compiled
        values (the statement's own literals), compiled once."""
        compiled = self._count_sql.get(id(stmt))
        if compiled is None or compiled[0] is not stmt:
            sql = stmt.compile(dialect=self.engine.dialect,
                               compile_kwargs={"render_postcompile": True})
            compiled = (stmt, str(sql), tuple(sql.positiontup or ()), dict(sql.params))
            self._count_sql[id(stmt)] = compiled
        return compiled[1], compiled[2], compiled[3]

    def device_ids(self, *, group: str | None = None, where: str | None = None) -> list[str]:
        stmt = (
            sa.select(DEVICE.c.id)
            .where(self.device_filter(group=group, where=where))
            .order_by(DEVICE.c.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def device_records(self, ids: Sequence[str] | None = None) -> list[DeviceRecord]:
        """Full records (with tags), for the in-memory evaluator and planners."""
        with self.engine.connect() as conn:
            return self._device_records(conn, ids)

    @staticmethod
    def _device_records(conn: Connection, ids: Sequence[str] | None) -> list[DeviceRecord]:
        dev_stmt = sa.select(DEVICE)
        tag_stmt = sa.select(TAG.c.device_id, TAG.c.source, TAG.c.key, TAG.c.value)
        if ids is not None:
            dev_stmt = dev_stmt.where(DEVICE.c.id.in_(ids))
            tag_stmt = tag_stmt.where(TAG.c.device_id.in_(ids))
        records = {
            r.id: DeviceRecord(r.id, r.firmware_version, r.hardware_rev, bool(r.online),
                               r.health)
            for r in conn.execute(dev_stmt.order_by(DEVICE.c.id))
        }
        for t in conn.execute(tag_stmt):
            rec = records.get(t.device_id)
            if rec is not None:
                (rec.tags if t.source == SOURCE_OPERATOR else rec.reported)[t.key] = t.value
        return list(records.values())

    # ------------------------------------------------------------------- groups

    def _load_groups(self, force: bool = False) -> dict[str, GroupNode]:
        # Group definitions are small and read on every membership query, so they are
        # cached; this process's writes invalidate at once, other processes' within 2 s.
        if force or self._groups is None or time.monotonic() - self._groups_loaded > 2.0:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(GROUP).order_by(GROUP.c.name)).all()
            nodes = {
                r.name: GroupNode(r.id, r.name, r.kind, r.query, r.parent_id, r.description)
                for r in rows
            }
            by_id = {n.id: n for n in nodes.values()}
            for node in nodes.values():
                if node.parent_id is not None and node.parent_id in by_id:
                    by_id[node.parent_id].children.append(node)
            self._groups = nodes
            self._groups_loaded = time.monotonic()
        return self._groups

    def invalidate_groups(self) -> None:
        """Drop cached group definitions (after writes made through a shared transaction)."""
        self._groups = None

    def get_group(self, name: str) -> GroupNode:
        groups = self._load_groups()
        if name not in groups:
            groups = self._load_groups(force=True)
        if name not in groups:
            hint = _suggest(name, groups)
            raise NotFound(f"no group {name!r}{hint}")
        return groups[name]

    def group_tree(self) -> list[GroupNode]:
        """Root groups with their children (sorted by name)."""
        groups = self._load_groups(force=True)
        return [g for g in groups.values() if g.parent_id is None]

    def create_group(
        self,
        name: str,
        *,
        kind: str | None = None,
        query: str | None = None,
        parent: str | None = None,
        members: Sequence[str] = (),
        description: str = "",
        conn: Connection | None = None,
    ) -> GroupNode:
        """Create a group. ``kind`` defaults to dynamic with a query, static with members."""
        kind = kind or ("dynamic" if query else "static" if members else "folder")
        _validate_group(name, kind, query, members)
        if conn is None:
            with self.transaction() as own:
                node = self.create_group(
                    name, kind=kind, query=query, parent=parent, members=members,
                    description=description, conn=own,
                )
            self._groups = None
            return node
        parent_id = None
        if parent is not None:
            parent_id = conn.execute(sa.select(GROUP.c.id).where(GROUP.c.name == parent)).scalar()
            if parent_id is None:
                raise NotFound(f"group {name!r}: no parent group {parent!r}")
        if conn.execute(sa.select(GROUP.c.id).where(GROUP.c.name == name)).first() is not None:
            raise Conflict(f"group {name!r} already exists")
        inserted = conn.execute(
            GROUP.insert().values(
                name=name, kind=kind, query=query, parent_id=parent_id,
                description=description, created_at=time.time(),
            )
        ).inserted_primary_key
        assert inserted is not None
        gid = inserted[0]
        if members:
            known = set(
                conn.execute(sa.select(DEVICE.c.id).where(DEVICE.c.id.in_(list(members)))).scalars()
            )
            missing = [m for m in members if m not in known]
            if missing:
                raise NotFound(f"group {name!r}: unknown devices {', '.join(missing[:5])}")
            conn.execute(MEMBER.insert(), [{"group_id": gid, "device_id": m} for m in members])
        self._groups = None
        return GroupNode(gid, name, kind, query, parent_id, description)

    def set_group_parent(self, name: str, parent: str | None) -> None:
        """Move a group under ``parent`` (None: make it a root); refuses cycles."""
        with self.transaction() as conn:
            gid = _group_id(conn, name)
            pid = None if parent is None else _group_id(conn, parent)
            if pid is not None:
                # Walk up from the new parent: meeting the group itself means a cycle.
                ancestors = _ancestor_ids(conn, pid)
                if gid in ancestors:
                    raise Conflict(f"group {name!r} cannot be its own ancestor (via {parent!r})")
            conn.execute(GROUP.update().where(GROUP.c.id == gid).values(parent_id=pid))
        self._groups = None

    def update_group_query(self, name: str, query: str) -> None:
        _validate_group(name, "dynamic", query, ())
        with self.transaction() as conn:
            gid = _group_id(conn, name)
            conn.execute(GROUP.update().where(GROUP.c.id == gid).values(query=query,
                                                                         kind="dynamic"))
        self._groups = None

    def delete_group(self, name: str) -> None:
        with self.transaction() as conn:
            gid = _group_id(conn, name)
            if conn.execute(sa.select(GROUP.c.id).where(GROUP.c.parent_id == gid)).first():
                raise Conflict(f"group {name!r} has subgroups: delete or move them first")
            conn.execute(GROUP.delete().where(GROUP.c.id == gid))
        self._groups = None

    def group_ids(self, name: str) -> sa.Select[Any] | sa.CompoundSelect:
        """The distinct ids of a group's devices, its whole subtree included, as one SELECT.

        Static members of the subtree come from a recursive CTE over ``parent_id``; the
        dynamic subgroups' queries join as alternatives of one ``or`` (equalities on one
        field fold into a single ``in``), so the whole tree resolves in one statement and
        each part can use its own index.
        """
        root = self.get_group(name)
        branches: list[sa.Select[Any] | sa.CompoundSelect] = []
        if any(node.kind == "static" for node in _subtree(root)):
            tree = (
                sa.select(GROUP.c.id).where(GROUP.c.id == root.id).cte("tree", recursive=True)
            )
            child = GROUP.alias("child")
            tree = tree.union_all(
                sa.select(child.c.id).join(tree, child.c.parent_id == tree.c.id)
            )
            branches.append(
                sa.select(MEMBER.c.device_id)
                .where(MEMBER.c.group_id.in_(sa.select(tree.c.id)))
                .distinct()
            )
        queries = [
            GroupQuery.parse(node.query).ast
            for node in _subtree(root)
            if node.kind == "dynamic" and node.query
        ]
        if queries:
            either = queries[0] if len(queries) == 1 else Or(tuple(queries))
            branches.append(compile_ids(either, self.target))
        if not branches:
            return sa.select(DEVICE.c.id).where(sa.false())
        return branches[0] if len(branches) == 1 else sa.union(*branches)

    def group_predicate(self, name: str) -> ColumnElement[bool]:
        """Membership of a group and all its subgroups as a predicate over ``device``."""
        return DEVICE.c.id.in_(self.group_ids(name))

    # ------------------------------------------------------------ health, metrics

    def presence_state(self) -> dict[str, tuple[bool, float | None]]:
        """(online, last_seen) of every device the registry believes online."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(DEVICE.c.id, DEVICE.c.online, DEVICE.c.last_seen).where(
                    DEVICE.c.online.is_(sa.true())
                )
            )
            return {r.id: (bool(r.online), r.last_seen) for r in rows}

    def health_records(
        self, *, group: str | None = None, where: str | None = None
    ) -> list[tuple[str, bool, str | None, float | None, dict[str, Any] | None]]:
        """(id, online, health, last_seen, latest telemetry) of the matching devices."""
        stmt = sa.select(
            DEVICE.c.id, DEVICE.c.online, DEVICE.c.health, DEVICE.c.last_seen, DEVICE.c.telemetry
        ).where(self.device_filter(group=group, where=where)).order_by(DEVICE.c.id)
        with self.engine.connect() as conn:
            return [(r.id, bool(r.online), r.health, r.last_seen, r.telemetry)
                    for r in conn.execute(stmt)]

    def save_metric_buckets(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert whole buckets (the service holds the open ones in memory)."""
        if not rows:
            return
        stmt = _upsert(self.dialect, BUCKET, ["device_id", "metric", "width", "start"],
                       ["count", "total", "min", "max", "last"])
        if self.dialect != "sqlite":  # every worker writes them: one lock order
            rows = sorted(rows, key=lambda r: (r["device_id"], r["metric"], r["width"],
                                               r["start"]))
        with self.transaction() as conn:
            conn.execute(stmt, list(rows))

    def purge_metric_buckets(self, width: int, before: float) -> int:
        with self.transaction() as conn:
            return int(conn.execute(
                BUCKET.delete().where(BUCKET.c.width == width, BUCKET.c.start < before)
            ).rowcount)

    def metric_series(
        self, metric: str, width: int, start: float, end: float, *,
        device: str | None = None, group: str | None = None,
    ) -> dict[int, tuple[int, float, float, float]]:
        """bucket start -> (count, total, min, max) summed over a device or a group."""
        stmt = (
            sa.select(
                BUCKET.c.start, sa.func.sum(BUCKET.c.count), sa.func.sum(BUCKET.c.total),
                sa.func.min(BUCKET.c.min), sa.func.max(BUCKET.c.max),
            )
            .where(BUCKET.c.metric == metric, BUCKET.c.width == width,
                   BUCKET.c.start >= start, BUCKET.c.start <= end)
            .group_by(BUCKET.c.start)
        )
        if device is not None:
            stmt = stmt.where(BUCKET.c.device_id == device)
        if group is not None:
            stmt = stmt.where(BUCKET.c.device_id.in_(self.group_ids(group)))
        with self.engine.connect() as conn:
            return {int(r[0]): (int(r[1]), float(r[2]), float(r[3]), float(r[4]))
                    for r in conn.execute(stmt)}

    # ----------------------------------------------------------------- releases

    def add_release(self, release: ReleaseInfo, conn: Connection | None = None) -> None:
        try:
            vkey = parse_version(release.version).key
        except VersionError as err:
            raise RegistryError(f"release: {err}") from None
        values = {
            "version": release.version, "vkey": vkey, "url": release.url,
            "sha256": release.sha256.lower(), "size": release.size,
            "hardware_revs": list(release.hardware_revs),
            "desired_keys": list(release.desired_keys), "notes": release.notes,
            "created_at": time.time(),
        }
        if conn is None:
            with self.transaction() as own:
                return self.add_release(release, own)
        exists = conn.execute(
            sa.select(RELEASE.c.version).where(RELEASE.c.version == release.version)
        ).first()
        if exists:
            raise Conflict(f"release {release.version} already exists")
        conn.execute(RELEASE.insert().values(**values))
        return None

    def list_releases(self) -> list[ReleaseInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(RELEASE).order_by(RELEASE.c.vkey)).all()
        return [
            ReleaseInfo(r.version, r.url, r.sha256, r.size, list(r.hardware_revs),
                        list(r.desired_keys), r.notes)
            for r in rows
        ]

    def get_release(self, version: str) -> ReleaseInfo:
        for rel in self.list_releases():
            if rel.version == version:
                return rel
        raise NotFound(f"no release {version!r}")

    # ------------------------------------------------------------------ shadows

    def save_shadows(
        self,
        docs: Sequence[tuple[str, str, int, dict[str, Any] | bytes]],
        reported: Mapping[str, Mapping[str, Any]] | None = None,
        fence: tuple[str, Sequence[str]] | None = None,
    ) -> None:
        """Upsert (thing, name, version, document) rows and mirror the classic shadows'
        reported state into the device registry, in one transaction.

        A document may come already serialized (JSON bytes), see engine.json_serializer.
        ``fence`` = (holder, partition lease names): raise ``StaleOwner`` and write nothing
        unless ``holder`` still holds them all. A stored row is never replaced by a lower
        version either way."""
        if not docs and not reported:
            return
        now = time.time()
        with self.transaction() as conn:
            if fence is not None:
                check_fence(conn, fence[0], fence[1], now)
            if docs and self.dialect == "sqlite":
                # One JSON parameter for the batch; serialized documents go in verbatim.
                batch = [(t, n, v, orjson.Fragment(d) if isinstance(d, bytes) else d, now)
                         for t, n, v, d in docs]
                conn.execute(_JSON_UPSERT_SHADOWS, {"rows": orjson.dumps(batch).decode()})
            elif docs:
                stmt = _upsert(self.dialect, SHADOW, ["thing_id", "name"],
                               ["version", "document", "updated_at"], monotonic="version")
                # Rows in key order: two batches on the same shadows (a partition changing
                # hands) lock them in the same order. Device rows follow, see record_ingest.
                conn.execute(stmt, [
                    {"thing_id": t, "name": n, "version": v, "document": d, "updated_at": now}
                    for t, n, v, d in sorted(docs, key=lambda doc: (doc[0], doc[1]))
                ])
            if reported:
                self.apply_reported(reported, conn)

    def delete_shadow(self, thing: str, name: str = "") -> None:
        with self.transaction() as conn:
            conn.execute(SHADOW.delete().where(SHADOW.c.thing_id == thing, SHADOW.c.name == name))

    def load_shadows(self) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(SHADOW)):
                yield r.thing_id, r.name, r.version, r.document

    def get_shadow(self, thing: str, name: str = "") -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(SHADOW.c.document).where(SHADOW.c.thing_id == thing,
                                                   SHADOW.c.name == name)
            ).scalar()

    def get_shadows(self, thing: str) -> dict[str, dict[str, Any]]:
        """Every stored shadow of ``thing``, classic (``""``) and named, by name."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(SHADOW.c.name, SHADOW.c.document).where(SHADOW.c.thing_id == thing)
            )
            return {r.name: r.document for r in rows}

    # ------------------------------------------------- jobs, rollouts, audit, leases

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.engine)

    @cached_property
    def rollouts(self) -> RolloutStore:
        return RolloutStore(self.engine)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.engine)

    @cached_property
    def leases(self) -> Leases:
        return Leases(self.engine)

    @cached_property
    def automation(self) -> AutomationStore:
        """Schedules, maintenance windows, policies and alerts."""
        return AutomationStore(self.engine)

    def locked(self) -> AbstractContextManager[Connection]:
        """A transaction holding the registry's write lock (see locked_transaction)."""
        return locked_transaction(self.engine)


# ---------------------------------------------------------------------- helpers

def _dbapi_integrity_error(conn: Connection) -> type[Exception]:
    # bulk_insert talks to the DBAPI cursor directly, so its errors arrive unwrapped.
    dbapi = conn.dialect.dbapi
    return dbapi.IntegrityError if dbapi is not None else sa.exc.IntegrityError


def _suggest(name: str, options: Iterable[str]) -> str:
    from difflib import get_close_matches

    hint = get_close_matches(name, list(options), 1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _validate_group(name: str, kind: str, query: str | None, members: Sequence[str]) -> None:
    if not name or len(name) > 128 or not name.isprintable():
        raise RegistryError(f"group name {name!r}: 1-128 printable characters")
    if kind not in GROUP_KINDS:
        raise RegistryError(f"group {name!r}: kind must be one of {', '.join(GROUP_KINDS)}")
    if kind == "dynamic":
        if not query:
            raise RegistryError(f"group {name!r}: a dynamic group needs a query")
        try:
            GroupQuery.parse(query)
        except QuerySyntaxError as err:
            raise RegistryError(f"group {name!r}: query {err}") from None
    elif query:
        raise RegistryError(f"group {name!r}: only dynamic groups have a query")
    if members and kind != "static":
        raise RegistryError(f"group {name!r}: only static groups list members")


def _group_id(conn: Connection, name: str) -> int:
    gid = conn.execute(sa.select(GROUP.c.id).where(GROUP.c.name == name)).scalar()
    if gid is None:
        names = conn.execute(sa.select(GROUP.c.name)).scalars()
        raise NotFound(f"no group {name!r}{_suggest(name, names)}")
    return int(gid)


def _ancestor_ids(conn: Connection, gid: int) -> set[int]:
    up = sa.select(GROUP.c.id, GROUP.c.parent_id).where(GROUP.c.id == gid).cte(
        "up", recursive=True
    )
    parent = GROUP.alias("parent")
    up = up.union_all(
        sa.select(parent.c.id, parent.c.parent_id).join(up, parent.c.id == up.c.parent_id)
    )
    return set(conn.execute(sa.select(up.c.id)).scalars())


def _subtree(node: GroupNode) -> Iterator[GroupNode]:
    yield node
    for child in node.children:
        yield from _subtree(child)


def _insert_ignore(dialect: str, table: sa.Table) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def _upsert(dialect: str, table: sa.Table, keys: list[str], update: list[str],
            monotonic: str | None = None) -> Any:
    """INSERT .. ON CONFLICT DO UPDATE; with ``monotonic``, a row is only replaced by one
    whose ``monotonic`` column is not lower (a stale shadow owner cannot go backwards)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table)
        return pg.on_conflict_do_update(
            index_elements=keys, set_={c: getattr(pg.excluded, c) for c in update},
            where=(table.c[monotonic] <= pg.excluded[monotonic]) if monotonic else None,
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    lite = sqlite_insert(table)
    return lite.on_conflict_do_update(
        index_elements=keys, set_={c: getattr(lite.excluded, c) for c in update},
        where=(table.c[monotonic] <= lite.excluded[monotonic]) if monotonic else None,
    )



# SQLite statements that take a whole batch as one JSON array parameter ``rows`` (each
# element an array of column values) and unpack it in C with json_each: per-row
# parameter binding cost more than the writes themselves on the shadow service's path
# (and see sqlite_batch on the GIL).

def _json_statements() -> tuple[Any, Any, Any, Any]:
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    delete_reported = TAG.delete().where(
        TAG.c.source == SOURCE_REPORTED, TAG.c.device_id.in_(json_values("rows"))
    )
    ver = json_rows("b_id", "b_fw", "b_key", "b_hw").subquery()
    update_versions = (
        DEVICE.update()
        .where(DEVICE.c.id == ver.c.b_id)
        .values(
            firmware_version=sa.func.coalesce(ver.c.b_fw, DEVICE.c.firmware_version),
            fw_key=sa.func.coalesce(ver.c.b_key, DEVICE.c.fw_key),
            hardware_rev=sa.func.coalesce(ver.c.b_hw, DEVICE.c.hardware_rev),
        )
    )
    ensure = sqlite_insert(DEVICE).from_select(
        ["id", "online", "created_at"], json_rows("id", "online", "created_at")
    ).on_conflict_do_nothing()
    cols = ["thing_id", "name", "version", "document", "updated_at"]
    shadows = sqlite_insert(SHADOW).from_select(cols, json_rows(*cols))
    upsert = shadows.on_conflict_do_update(
        index_elements=["thing_id", "name"],
        set_={c: getattr(shadows.excluded, c) for c in ("version", "document", "updated_at")},
        where=SHADOW.c.version <= shadows.excluded.version,
    )
    return delete_reported, update_versions, ensure, upsert


_JSON_DELETE_REPORTED, _JSON_UPDATE_VERSIONS, _JSON_ENSURE_DEVICES, _JSON_UPSERT_SHADOWS = (
    _json_statements()
)


# record_ingest's row update: each column keeps its value unless the row carries one.
_NO_INGEST = {"b_p": False, "b_online": False, "b_ts": None, "b_h": False, "b_health": None,
              "b_tel": None}
_INGEST_UPDATE = DEVICE.update().where(DEVICE.c.id == sa.bindparam("b_id")).values(
    online=sa.case((sa.bindparam("b_p", type_=sa.Boolean), sa.bindparam("b_online",
                                                                        type_=sa.Boolean)),
                   else_=DEVICE.c.online),
    last_seen=sa.case((sa.bindparam("b_p", type_=sa.Boolean),
                       sa.bindparam("b_ts", type_=DEVICE.c.last_seen.type)),
                      else_=DEVICE.c.last_seen),
    health=sa.case((sa.bindparam("b_h", type_=sa.Boolean),
                    sa.bindparam("b_health", type_=DEVICE.c.health.type)),
                   else_=DEVICE.c.health),
    telemetry=sa.case((sa.bindparam("b_h", type_=sa.Boolean),
                       sa.bindparam("b_tel", type_=DEVICE.c.telemetry.type)),
                      else_=DEVICE.c.telemetry),
)
_INGEST_FIELDS = ("b_id", "b_p", "b_online", "b_ts", "b_h", "b_health", "b_tel")


def _json_ingest_update() -> Any:
    """_INGEST_UPDATE over one JSON array of rows (SQLite; see sqlite_batch)."""
    r = json_rows(*_INGEST_FIELDS).subquery()
    return DEVICE.update().where(DEVICE.c.id == r.c.b_id).values(
        online=sa.case((r.c.b_p != 0, r.c.b_online != 0), else_=DEVICE.c.online),
        last_seen=sa.case((r.c.b_p != 0, r.c.b_ts), else_=DEVICE.c.last_seen),
        health=sa.case((r.c.b_h != 0, r.c.b_health), else_=DEVICE.c.health),
        telemetry=sa.case((r.c.b_h != 0, r.c.b_tel), else_=DEVICE.c.telemetry),
    )


_JSON_INGEST_UPDATE = _json_ingest_update()
