"""The group query language: parser -> AST -> SQL expression or in-memory evaluation.

Example::

    location = "factory-A" and firmware_version < 2.2.0
        and not tag.deployment_ring in ("canary")

Fields: ``id``, ``firmware_version``, ``hardware_rev``, ``online``, ``health`` (device
columns), ``tag.<key>`` (operator tags), and any other name is a reported attribute: a
scalar reported key (``ota_status``) or a self-reported tag (``location``); ``reported.<key>``
names one explicitly. Operators ``= != < <= > >=``, ``in (...)``, glob ``~ "eu-*"``,
``has(field)``, ``and or not ( )``. Fields named ``*_version`` compare as versions.

The two back ends share one definition of every comparison (see :func:`attribute_value`),
and every compiled SQL predicate is two-valued (never NULL), so ``not`` means the same in
SQL as in memory. Values are always bound parameters, never formatted into SQL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import lru_cache
from typing import Any, Literal, Union

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from fleet_tui.domain.version import VersionError, is_version_field, parse_version

#: Device columns that a query can name directly.
COLUMN_FIELDS = ("id", "firmware_version", "hardware_rev", "online", "health")
TAG_OPERATOR = "o"
TAG_REPORTED = "r"


class QuerySyntaxError(ValueError):
    """A query that cannot be parsed or compiled; ``col`` is 1-based."""

    def __init__(self, col: int, message: str, query: str = "") -> None:
        super().__init__(f"col {col}: {message}")
        self.col = col
        self.message = message
        self.query = query


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class FieldRef:
    kind: Literal["column", "tag", "reported"]
    name: str
    col: int

    def __str__(self) -> str:
        return {"column": "", "tag": "tag.", "reported": ""}[self.kind] + self.name

    @property
    def is_version(self) -> bool:
        return self.kind != "tag" and is_version_field(self.name)


@dataclass(frozen=True, slots=True)
class Value:
    kind: Literal["string", "number", "bare", "bool"]
    text: str
    col: int

    @property
    def number(self) -> float:
        return float(self.text)


@dataclass(frozen=True, slots=True)
class Compare:
    field: FieldRef
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class In:
    field: FieldRef
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Glob:
    field: FieldRef
    pattern: Value


@dataclass(frozen=True, slots=True)
class Has:
    field: FieldRef


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


Node = Union[Compare, In, Glob, Has, Not, And, Or]  # noqa: UP007 - used at runtime


# ------------------------------------------------------------------------ lexer

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<op><=|>=|!=|=|<|>|~)
  | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>-?[0-9][0-9A-Za-z.+\-_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)
    """,
    re.VERBOSE,
)
_NUMBER_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")
_KEYWORDS = {"and", "or", "not", "in", "has", "true", "false"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    col: int


def _unquote(raw: str, col: int) -> str:
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise QuerySyntaxError(col + i + 1, f"unknown escape '\\{nxt}' in string")
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "\"'":
                raise QuerySyntaxError(pos + 1, "unterminated string", text)
            raise QuerySyntaxError(pos + 1, f"unexpected character {ch!r}", text)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "ident" and raw.lower() in _KEYWORDS:
            kind = raw.lower()
        if kind != "ws":
            tokens.append(_Token(kind, raw, pos + 1))
        pos = m.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


# ----------------------------------------------------------------------- parser


def _describe(tok: _Token) -> str:
    return "end of query" if tok.kind == "end" else repr(tok.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: _Token | None = None) -> QuerySyntaxError:
        tok = tok or self.tok
        return QuerySyntaxError(tok.col, message, self.text)

    def expect(self, kind: str, what: str) -> _Token:
        if self.tok.kind != kind:
            raise self.error(f"expected {what}, found {_describe(self.tok)}")
        return self.take()

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.error("empty query: expected a condition such as tag.ring = \"canary\"")
        node = self.parse_or()
        if self.tok.kind != "end":
            raise self.error(f"expected 'and', 'or' or end of query, found {_describe(self.tok)}")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.tok.kind == "or":
            self.take()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.tok.kind == "and":
            self.take()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_not(self) -> Node:
        if self.tok.kind == "not":
            self.take()
            return Not(self.parse_not())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        tok = self.tok
        if tok.kind == "lparen":
            self.take()
            node = self.parse_or()
            self.expect("rparen", "')'")
            return node
        if tok.kind == "has":
            self.take()
            self.expect("lparen", "'(' after has")
            ref = self.parse_field()
            self.expect("rparen", "')'")
            return Has(ref)
        if tok.kind != "ident":
            raise self.error(f"expected a field name, found {_describe(tok)}")
        ref = self.parse_field()
        op = self.tok
        if op.kind == "op":
            self.take()
            value = self.parse_value(after=op.text)
            if op.text == "~":
                return Glob(ref, value)
            return Compare(ref, op.text, value)
        negate = False
        if op.kind == "not":
            self.take()
            negate = True
            if self.tok.kind != "in":
                raise self.error(f"expected 'in' after 'not', found {_describe(self.tok)}")
        if self.tok.kind == "in":
            self.take()
            self.expect("lparen", "'(' after in")
            values = [self.parse_value(after="(")]
            while self.tok.kind == "comma":
                self.take()
                values.append(self.parse_value(after=","))
            self.expect("rparen", "',' or ')'")
            found: Node = In(ref, tuple(values))
            return Not(found) if negate else found
        raise self.error(
            f"expected an operator (= != < <= > >= ~ in) after {str(ref)!r}, "
            f"found {_describe(op)}"
        )

    def parse_field(self) -> FieldRef:
        tok = self.expect("ident", "a field name")
        name = tok.text
        if name in COLUMN_FIELDS:
            return FieldRef("column", name, tok.col)
        head, _, rest = name.partition(".")
        if head in ("tag", "reported") and _:
            if not rest:
                raise self.error(f"expected a key after '{head}.'", tok)
            kind: Literal["tag", "reported"] = "tag" if head == "tag" else "reported"
            return FieldRef(kind, rest, tok.col)
        if "." in name:
            raise self.error(
                f"unknown field {name!r}: use tag.<key> for operator tags or reported.<key>", tok
            )
        return FieldRef("reported", name, tok.col)

    def parse_value(self, after: str) -> Value:
        tok = self.tok
        if tok.kind == "string":
            self.take()
            return Value("string", _unquote(tok.text, tok.col), tok.col)
        if tok.kind == "number":
            self.take()
            kind: Literal["number", "bare"] = "number" if _NUMBER_RE.match(tok.text) else "bare"
            return Value(kind, tok.text, tok.col)
        if tok.kind in ("true", "false"):
            self.take()
            return Value("bool", tok.kind, tok.col)
        if tok.kind == "ident":
            self.take()
            return Value("bare", tok.text, tok.col)
        raise self.error(f"expected a value after '{after}'")


# ------------------------------------------------------------ shared semantics


def attribute_value(value: Any) -> tuple[str, float | None] | None:
    """How a reported value or tag is stored and compared: (text, number-or-None).

    Returns None for values that are not attributes (null, objects, arrays).
    """
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int):
        return str(value), float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return repr(value), value
    if isinstance(value, str):
        num = float(value) if _NUMBER_RE.match(value) else None
        return value, num
    return None


def reported_attributes(reported: Mapping[str, Any]) -> dict[str, Any]:
    """The queryable attributes of a reported state: scalar keys and self-reported tags."""
    out = {k: v for k, v in reported.items() if _is_scalar(v)}
    tags = reported.get("tags")
    if isinstance(tags, Mapping):
        out.update({k: v for k, v in tags.items() if _is_scalar(v)})
    return out


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int))


def glob_to_like(pattern: str) -> str:
    """Translate a ``*``/``?`` glob into a LIKE pattern escaped with backslash."""
    out = []
    for ch in pattern:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a comparison compares: which stored representation, against what operand."""

    target: Literal["text", "num", "vkey", "bool"]
    op: str  # one of = < <= > >= (!= is compiled as not =)
    operand: Any


def _version_operand(value: Value) -> str:
    try:
        return parse_version(value.text).key
    except VersionError:
        raise QuerySyntaxError(value.col, f"{value.text!r} is not a version") from None


def _plan(ref: FieldRef, op: str, value: Value) -> _Plan:
    base_op = "=" if op == "!=" else op
    ordering = base_op != "="
    if ref.kind == "column" and ref.name == "online":
        if value.kind != "bool" or ordering:
            raise QuerySyntaxError(value.col, "online compares only = or != with true/false")
        return _Plan("bool", "=", value.text == "true")
    if value.kind == "bool" and ordering:
        raise QuerySyntaxError(value.col, f"cannot order by a boolean with '{op}'")
    if ref.is_version:
        if ordering or value.kind in ("bare", "number"):
            return _Plan("vkey", base_op, _version_operand(value))
        return _Plan("text", "=", value.text)
    if value.kind == "number" and ref.kind != "column":
        return _Plan("num", base_op, value.number)
    return _Plan("text", base_op, value.text)


# ------------------------------------------------------------ in-memory back end


@dataclass(slots=True)
class DeviceRecord:
    """A device as the query language sees it (the in-memory evaluator's input)."""

    id: str
    firmware_version: str | None = None
    hardware_rev: str | None = None
    online: bool = False
    health: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)


def _lookup(record: DeviceRecord, ref: FieldRef) -> tuple[str, float | None, bool] | None:
    """(text, number, is-bool-column) of a field, or None when the device lacks it."""
    if ref.kind == "column":
        raw = getattr(record, ref.name)
        if ref.name == "online":
            return ("true" if raw else "false"), None, True
        return None if raw is None else (str(raw), None, False)
    source = record.tags if ref.kind == "tag" else reported_attributes(record.reported)
    if ref.name not in source:
        return None
    stored = attribute_value(source[ref.name])
    return None if stored is None else (stored[0], stored[1], False)


def _eval_compare(record: DeviceRecord, ref: FieldRef, op: str, value: Value) -> bool:
    plan = _plan(ref, op, value)
    found = _lookup(record, ref)
    if plan.target == "bool":
        result = bool(record.online) == plan.operand
    elif found is None:
        result = False
    else:
        text, num, _ = found
        if plan.target == "text":
            result = _PY_OPS[plan.op](text, plan.operand)
        elif plan.target == "num":
            result = num is not None and _PY_OPS[plan.op](num, plan.operand)
        else:
            try:
                key = parse_version(text).key
            except VersionError:
                key = None
            result = key is not None and _PY_OPS[plan.op](key, plan.operand)
    return not result if op == "!=" else result


def evaluate(node: Node, record: DeviceRecord) -> bool:
    """Evaluate a parsed query against one device, exactly as the SQL back end would."""
    if isinstance(node, And):
        return all(evaluate(n, record) for n in node.items)
    if isinstance(node, Or):
        return any(evaluate(n, record) for n in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, record)
    if isinstance(node, Compare):
        return _eval_compare(record, node.field, node.op, node.value)
    if isinstance(node, In):
        return any(_eval_compare(record, node.field, "=", v) for v in node.values)
    if isinstance(node, Glob):
        _check_glob(node)
        found = _lookup(record, node.field)
        pattern = glob_to_regex(node.pattern.text)
        return found is not None and pattern.fullmatch(found[0]) is not None
    if isinstance(node, Has):
        return _lookup(record, node.field) is not None
    raise TypeError(f"not a query node: {node!r}")


def _check_glob(node: Glob) -> None:
    if node.pattern.kind in ("number", "bool"):
        raise QuerySyntaxError(node.pattern.col, "expected a quoted pattern after '~'")
    if node.field.kind == "column" and node.field.name == "online":
        raise QuerySyntaxError(node.field.col, "online cannot be matched with '~'")


# A compiled predicate takes the record and its queryable reported attributes (see
# reported_attributes), which the caller computes once for all the queries it tests.
Predicate = Callable[[DeviceRecord, Mapping[str, Any]], bool]
_Found = Union[tuple[str, Union[float, None]], None]  # noqa: UP007 - used at runtime


@lru_cache(maxsize=65536, typed=True)
def _stored_value(value: Any) -> tuple[str, float | None] | None:
    return attribute_value(value)


def _stored(value: Any) -> tuple[str, float | None] | None:
    try:
        return _stored_value(value)
    except TypeError:  # unhashable (objects, arrays): never an attribute
        return None


@lru_cache(maxsize=4096)
def _version_key_of(text: str) -> str | None:
    try:
        return parse_version(text).key
    except VersionError:
        return None


def _lookup_fn(ref: FieldRef) -> Callable[[DeviceRecord, Mapping[str, Any]], _Found]:
    """:func:`_lookup` for one field, decided once: (text, number) or None."""
    name = ref.name
    if ref.kind == "column":
        if name == "online":
            return lambda rec, _: ("true" if rec.online else "false", None)

        def column(rec: DeviceRecord, _: Mapping[str, Any]) -> _Found:
            raw = getattr(rec, name)
            return None if raw is None else (str(raw), None)
        return column
    if ref.kind == "tag":
        def tag(rec: DeviceRecord, _: Mapping[str, Any]) -> _Found:
            tags = rec.tags
            return _stored(tags[name]) if name in tags else None
        return tag

    def reported(_: DeviceRecord, attrs: Mapping[str, Any]) -> _Found:
        return _stored(attrs[name]) if name in attrs else None
    return reported


def _compile_compare(ref: FieldRef, op: str, value: Value) -> Predicate:
    plan = _plan(ref, op, value)
    negate = op == "!="
    operand = plan.operand
    if plan.target == "bool":
        return lambda rec, _: (bool(rec.online) == operand) != negate
    look = _lookup_fn(ref)
    test = _PY_OPS[plan.op]
    if plan.target == "text":
        def text(rec: DeviceRecord, attrs: Mapping[str, Any]) -> bool:
            found = look(rec, attrs)
            return (found is not None and test(found[0], operand)) != negate
        return text
    if plan.target == "num":
        def num(rec: DeviceRecord, attrs: Mapping[str, Any]) -> bool:
            found = look(rec, attrs)
            return (found is not None and found[1] is not None
                    and test(found[1], operand)) != negate
        return num

    def vkey(rec: DeviceRecord, attrs: Mapping[str, Any]) -> bool:
        found = look(rec, attrs)
        key = None if found is None else _version_key_of(found[0])
        return (key is not None and test(key, operand)) != negate
    return vkey


def compile_predicate(node: Node) -> Predicate:
    """``node`` as a Python function of (record, reported_attributes(record.reported)),
    with each comparison planned once: the same answers as :func:`evaluate`, for testing
    one query against many devices (a page of the device table)."""
    if isinstance(node, (And, Or)):
        parts = [compile_predicate(n) for n in node.items]
        if isinstance(node, And):
            return lambda rec, attrs: all(p(rec, attrs) for p in parts)
        return lambda rec, attrs: any(p(rec, attrs) for p in parts)
    if isinstance(node, Not):
        inner = compile_predicate(node.item)
        return lambda rec, attrs: not inner(rec, attrs)
    if isinstance(node, Compare):
        return _compile_compare(node.field, node.op, node.value)
    if isinstance(node, In):
        options = [_compile_compare(node.field, "=", v) for v in node.values]
        return lambda rec, attrs: any(p(rec, attrs) for p in options)
    if isinstance(node, Glob):
        _check_glob(node)
        look = _lookup_fn(node.field)
        pattern = glob_to_regex(node.pattern.text)

        def glob(rec: DeviceRecord, attrs: Mapping[str, Any]) -> bool:
            found = look(rec, attrs)
            return found is not None and pattern.fullmatch(found[0]) is not None
        return glob
    if isinstance(node, Has):
        look = _lookup_fn(node.field)
        return lambda rec, attrs: look(rec, attrs) is not None
    raise TypeError(f"not a query node: {node!r}")


# ------------------------------------------------------------------ SQL back end


@dataclass(frozen=True)
class SqlTarget:
    """The registry's tables as the compiler needs them (keeps domain free of the schema).

    ``device`` has the columns in :data:`COLUMN_FIELDS` plus ``fw_key`` (the version key of
    ``firmware_version``); ``tag`` has ``device_id, source, key, value, num, vkey``.
    """

    device: sa.Table
    tag: sa.FromClause  # the table, or an alias of it (see _driven_by_tag)
    dialect: str = "sqlite"


def _text(col: ColumnElement[Any], target: SqlTarget) -> ColumnElement[Any]:
    # PostgreSQL's default collation orders text by locale; Python and SQLite order by code
    # point. "C" makes PostgreSQL agree, so the two back ends return the same devices.
    return col.collate("C") if target.dialect == "postgresql" else col


def _sql_op(col: ColumnElement[Any], op: str, operand: Any) -> ColumnElement[bool]:
    param = sa.literal(operand)
    if op == "=":
        return col == param
    if op == "<":
        return col < param
    if op == "<=":
        return col <= param
    if op == ">":
        return col > param
    return col >= param


def _tag_select(
    ref: FieldRef, target: SqlTarget, cond: ColumnElement[bool] | None
) -> sa.Select[Any]:
    tag = target.tag.c
    source = TAG_OPERATOR if ref.kind == "tag" else TAG_REPORTED
    where = [tag.source == source, tag.key == ref.name]
    if cond is not None:
        where.append(cond)
    return sa.select(tag.device_id).where(*where)


def _tag_subquery(
    ref: FieldRef, target: SqlTarget, cond: ColumnElement[bool] | None
) -> ColumnElement[bool]:
    return target.device.c.id.in_(_tag_select(ref, target, cond))


def _tag_condition(plan: _Plan, target: SqlTarget) -> ColumnElement[bool]:
    """A comparison on the tag table's stored representation that ``plan`` names."""
    tag = target.tag.c
    stored: ColumnElement[Any] = {"text": tag.value, "num": tag.num, "vkey": tag.vkey}[
        plan.target
    ]
    if plan.target != "num":
        stored = _text(stored, target)
    return _sql_op(stored, plan.op, plan.operand)


def _tag_like(node: Glob, target: SqlTarget) -> ColumnElement[bool]:
    like = glob_to_like(node.pattern.text)
    return _text(target.tag.c.value, target).like(like, escape="\\")


def _sql_compare(ref: FieldRef, op: str, value: Value, target: SqlTarget) -> ColumnElement[bool]:
    plan = _plan(ref, op, value)
    dev = target.device.c
    expr: ColumnElement[bool]
    if plan.target == "bool":
        expr = dev.online.is_(sa.true()) if plan.operand else dev.online.is_(sa.false())
    elif ref.kind == "column":
        col = dev.fw_key if plan.target == "vkey" else dev[ref.name]
        # "col IS NOT NULL AND ..." is false, never NULL, for a missing value.
        expr = sa.and_(col.is_not(None), _sql_op(_text(col, target), plan.op, plan.operand))
    else:
        expr = _tag_subquery(ref, target, _tag_condition(plan, target))
    return sa.not_(expr) if op == "!=" else expr


def compile_sql(node: Node, target: SqlTarget) -> ColumnElement[bool]:
    """Compile a parsed query to a parameterized, two-valued SQLAlchemy predicate."""
    if isinstance(node, And):
        return sa.and_(*(compile_sql(n, target) for n in node.items))
    if isinstance(node, Or):
        return sa.or_(*(compile_sql(n, target) for n in node.items))
    if isinstance(node, Not):
        return sa.not_(compile_sql(node.item, target))
    if isinstance(node, Compare):
        return _sql_compare(node.field, node.op, node.value, target)
    if isinstance(node, In):
        return sa.or_(*(_sql_compare(node.field, "=", v, target) for v in node.values))
    if isinstance(node, Glob):
        _check_glob(node)
        like = glob_to_like(node.pattern.text)
        if node.field.kind == "column":
            col = target.device.c[node.field.name]
            return sa.and_(col.is_not(None), _text(col, target).like(like, escape="\\"))
        return _tag_subquery(node.field, target, _tag_like(node, target))
    if isinstance(node, Has):
        if node.field.kind == "column":
            if node.field.name in ("id", "online"):
                return sa.true()
            return target.device.c[node.field.name].is_not(None)
        return _tag_subquery(node.field, target, None)
    raise TypeError(f"not a query node: {node!r}")


def _tag_leaf_select(node: Node, target: SqlTarget) -> sa.Select[Any] | None:
    """The tag-index SELECT of device ids for a positive tag condition, else None."""
    if isinstance(node, Compare) and node.field.kind != "column" and node.op != "!=":
        cond = _tag_condition(_plan(node.field, node.op, node.value), target)
        return _tag_select(node.field, target, cond)
    if isinstance(node, In) and node.field.kind != "column":
        conds = [_tag_condition(_plan(node.field, "=", v), target) for v in node.values]
        return _tag_select(node.field, target, sa.or_(*conds))
    if isinstance(node, Glob) and node.field.kind != "column":
        _check_glob(node)
        return _tag_select(node.field, target, _tag_like(node, target))
    if isinstance(node, Has) and node.field.kind != "column":
        return _tag_select(node.field, target, None)
    return None


def merge_equalities(items: Sequence[Node]) -> list[Node]:
    """Fold ``f = a``, ``f = b``, ``f in (c)`` alternatives into one ``f in (a, b, c)``.

    Same meaning (``in`` is an OR of ``=``), but one index range scan instead of a UNION
    that the database must de-duplicate: e.g. a folder whose subgroups are
    ``tag.line = "l1"``, ``tag.line = "l2"``, ...
    """
    merged: dict[tuple[str, str], list[Value]] = {}
    first: dict[tuple[str, str], FieldRef] = {}
    rest: list[Node] = []
    for item in items:
        if isinstance(item, Compare) and item.op == "=":
            ref, values = item.field, [item.value]
        elif isinstance(item, In):
            ref, values = item.field, list(item.values)
        else:
            rest.append(item)
            continue
        key = (ref.kind, ref.name)
        first.setdefault(key, ref)
        merged.setdefault(key, []).extend(values)
    folded: list[Node] = [In(first[k], tuple(v)) for k, v in merged.items()]
    return folded + rest


def _alternatives(node: Node) -> Iterator[Node]:
    if isinstance(node, Or):
        for item in node.items:
            yield from _alternatives(item)
    else:
        yield node


def compile_ids(node: Node, target: SqlTarget) -> sa.Select[Any] | sa.CompoundSelect:
    """The ids of the matching devices as a SELECT shaped so each part can use an index.

    A tag condition reads the tag index alone and an ``or`` becomes a UNION of its parts;
    everything else filters the device table. Used for counts and group membership, where
    an OR of IN-subqueries would make the database visit every device.
    """
    leaf = _tag_leaf_select(node, target)
    if leaf is not None:
        return leaf
    if isinstance(node, And):
        driven = _driven_by_tag(node, target)
        if driven is not None:
            return driven
    if isinstance(node, Or):
        # Flatten nested ors first: SQLite cannot nest a UNION inside a UNION.
        items = merge_equalities(list(_alternatives(node)))
        if len(items) == 1:
            return compile_ids(items[0], target)
        return sa.union(*(compile_ids(item, target) for item in items))
    return sa.select(target.device.c.id).where(compile_sql(node, target))


def _driven_by_tag(node: And, target: SqlTarget) -> sa.Select[Any] | None:
    """An ``and`` with a positive tag condition, as that condition's tag-index range
    joined to the device rows that the other conditions test.

    ``device.id IN (tag subquery) AND ...`` made SQLite first copy the whole id set into a
    temporary index (111k ids for ``location = "factory-A"`` on 1M devices: a quarter of
    the count's time); the join reads the index range in place. A device has at most one
    tag row per (source, key), so the join yields each device once. The first such
    condition drives (the query's author knows the fleet better than a guess would).
    """
    for i, item in enumerate(node.items):
        driver = SqlTarget(target.device, target.tag.alias("driver"), target.dialect)
        leaf = _tag_leaf_select(item, driver)
        if leaf is None:
            continue
        rest = node.items[:i] + node.items[i + 1:]
        dev = target.device
        return (
            leaf.with_only_columns(dev.c.id)
            .join_from(driver.tag, dev, dev.c.id == driver.tag.c.device_id)
            .where(compile_sql(And(rest) if len(rest) > 1 else rest[0], target))
        )
    return None


# -------------------------------------------------------------------- the facade


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> GroupQuery:
    # Group queries are parsed on every membership lookup; the AST is immutable.
    return GroupQuery._parse_checked(text)



def _walk(node: Node) -> Iterable[Node]:
    yield node
    if isinstance(node, (And, Or)):
        for item in node.items:
            yield from _walk(item)
    elif isinstance(node, Not):
        yield from _walk(node.item)


@dataclass(frozen=True)
class GroupQuery:
    """A parsed, checked query: ``GroupQuery.parse(text).compile(target)`` or ``.matches``."""

    text: str
    ast: Node

    @classmethod
    def parse(cls, text: str, known_reported: Iterable[str] | None = None) -> GroupQuery:
        """Parse and type-check ``text``.

        ``known_reported``, when given, is the set of reported attribute names the fleet has;
        a bare name outside it is an unknown field (with a suggestion).
        """
        query = _parse_cached(text)
        if known_reported is None:
            return query
        known = set(known_reported)
        for node in _walk(query.ast):
            ref: FieldRef | None = getattr(node, "field", None)
            if ref is not None and ref.kind == "reported" and ref.name not in known:
                hint = get_close_matches(ref.name, sorted(known | set(COLUMN_FIELDS)), 1)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                raise QuerySyntaxError(ref.col, f"unknown field {ref.name!r}{extra}", text)
        return query

    @classmethod
    def _parse_checked(cls, text: str) -> GroupQuery:
        ast = _Parser(text).parse()
        try:
            for node in _walk(ast):
                if isinstance(node, Compare):
                    _plan(node.field, node.op, node.value)
                elif isinstance(node, In):
                    for v in node.values:
                        _plan(node.field, "=", v)
                elif isinstance(node, Glob):
                    _check_glob(node)
        except QuerySyntaxError as err:
            raise QuerySyntaxError(err.col, err.message, text) from None
        return cls(text, ast)

    def compile(self, target: SqlTarget) -> ColumnElement[bool]:
        return compile_sql(self.ast, target)

    def compile_ids(self, target: SqlTarget) -> sa.Select[Any] | sa.CompoundSelect:
        return compile_ids(self.ast, target)

    def matches(self, record: DeviceRecord) -> bool:
        return evaluate(self.ast, record)

    def filter(self, records: Sequence[DeviceRecord]) -> list[DeviceRecord]:
        return [r for r in records if evaluate(self.ast, r)]


class GroupMatcher:
    """Which of many groups' queries a device matches: the device table asks this for
    every row it shows. A query that is one ``tag.KEY = "value"`` test (most groups of a
    fleet: a site, a line, a ring) is answered by one dictionary lookup per tag of the
    device; the others are evaluated in full. Same answers as :meth:`GroupQuery.matches`."""

    def __init__(self, queries: Sequence[tuple[str, GroupQuery]]) -> None:
        self.names = [name for name, _ in queries]
        self._by_tag: dict[tuple[str, str], list[int]] = {}
        self._general: list[tuple[int, Predicate]] = []
        for i, (_, query) in enumerate(queries):
            node = query.ast
            if (isinstance(node, Compare) and node.op == "=" and node.field.kind == "tag"
                    and (plan := _plan(node.field, "=", node.value)).target == "text"):
                self._by_tag.setdefault((node.field.name, plan.operand), []).append(i)
            else:
                self._general.append((i, compile_predicate(node)))

    def matching(self, record: DeviceRecord) -> list[str]:
        """Names of the groups whose query ``record`` matches, in the order given."""
        hits: list[int] = []
        if self._by_tag:
            by_tag = self._by_tag
            for key, raw in record.tags.items():
                # A tag's stored text is the string itself (the registry's tags are text).
                text = raw if raw.__class__ is str else (_stored(raw) or (None,))[0]
                if text is not None:
                    hits += by_tag.get((key, text), ())
        if self._general:
            attrs = reported_attributes(record.reported)
            hits += [i for i, matches in self._general if matches(record, attrs)]
        return [self.names[i] for i in sorted(hits)]
