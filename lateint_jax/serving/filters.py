"""Metadata filters: a JSON object checked and compiled to a parameterised SQLite WHERE clause
over `documents.metadata` (a JSON object per document, see `document_store`).

    {"field": "lang", "eq": "en"}                  equality (string, number, true/false, null)
    {"field": "lang", "in": ["en", "fr"]}          one of several values
    {"field": "year", "gte": 2010, "lt": 2020}     a range: any of gt, gte, lt, lte (numbers or
                                                   strings, all of one kind)
    {"and": [f, ...]}, {"or": [f, ...]}, {"not": f}

`field` is a top-level key or a dotted path into nested objects (`venue.country`). Comparisons
are typed: "2010" (a string) never equals 2010 (a number), and true is not 1. A document
without the field matches no condition on it (but does match `not` of one). Values only ever
travel as SQL parameters; the field path is checked against FIELD_PATTERN and also passed as a
parameter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lateint_jax.errors import InputError

FIELD_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_DEPTH = 8
MAX_CONDITIONS = 64
MAX_IN_VALUES = 1000
MAX_STRING = 1000


@dataclass(frozen=True)
class CompiledFilter:
    """`sql` is a boolean expression over the column `metadata`; `params` fill its `?`s."""

    sql: str
    params: tuple


def _kind(value, where: str) -> str:
    """The SQLite json_type a JSON value has ('text', 'integer'/'real' as 'number', ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{where}: numbers must be finite")
        return "number"
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise InputError(f"{where}: strings are limited to {MAX_STRING} characters")
        return "text"
    raise InputError(f"{where}: a value must be a string, number, true, false or null")


def _typed(path: str, kind: str) -> tuple[str, list]:
    """SQL testing that the value at `path` is of `kind`."""
    if kind == "number":
        return "json_type(metadata, ?) IN ('integer', 'real')", [path]
    return "json_type(metadata, ?) = ?", [path, kind]


def _equals(path: str, value, where: str) -> tuple[str, list]:
    kind = _kind(value, where)
    typed, params = _typed(path, kind)
    if kind in ("null", "true", "false"):
        return typed, params
    return f"({typed} AND json_extract(metadata, ?) = ?)", [*params, path, value]


class _Compiler:
    def __init__(self):
        self.conditions = 0

    def compile(self, node, where: str, depth: int) -> tuple[str, list]:
        if depth > MAX_DEPTH:
            raise InputError(f"{where}: filters nest at most {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            raise InputError(f"{where}: a filter must be a JSON object")
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise InputError(f"{where}: a filter has at most {MAX_CONDITIONS} conditions")
        logical = [key for key in ("and", "or", "not") if key in node]
        if logical:
            if len(node) != 1:
                extra = sorted(set(node) - {logical[0]})
                raise InputError(f"{where}: '{logical[0]}' takes no other keys (got {extra})")
            return self._logical(logical[0], node[logical[0]], where, depth)
        return self._condition(node, where)

    def _logical(self, op: str, value, where: str, depth: int) -> tuple[str, list]:
        if op == "not":
            sql, params = self.compile(value, f"{where}.not", depth + 1)
            return f"(NOT COALESCE({sql}, 0))", params
        if not isinstance(value, list) or not value:
            raise InputError(f"{where}.{op}: expected a non-empty list of filters")
        parts = [self.compile(v, f"{where}.{op}[{i}]", depth + 1) for i, v in enumerate(value)]
        joiner = " AND " if op == "and" else " OR "
        return "(" + joiner.join(sql for sql, _ in parts) + ")", [p for _, ps in parts for p in ps]

    def _condition(self, node: dict, where: str) -> tuple[str, list]:
        if "field" not in node:
            raise InputError(
                f"{where}: expected 'field' with one of eq, in, gt, gte, lt, lte, or "
                f"'and' / 'or' / 'not' (got keys {sorted(node)})"
            )
        field = node["field"]
        if not isinstance(field, str) or not FIELD_PATTERN.match(field):
            raise InputError(
                f"{where}.field: {field!r} is not a field name (letters, digits and _, "
                "dots between nested names)"
            )
        path = "$." + field
        ops = sorted(set(node) - {"field"})
        unknown = [op for op in ops if op not in ("eq", "in", *RANGE_OPS)]
        if unknown:
            raise InputError(
                f"{where}: unknown operator(s) {unknown}; use eq, in, gt, gte, lt, lte"
            )
        if not ops:
            raise InputError(f"{where}: '{field}' needs an operator: eq, in, gt, gte, lt or lte")
        if len(ops) > 1 and not set(ops) <= set(RANGE_OPS):
            raise InputError(f"{where}: eq and in stand alone; only range bounds combine ({ops})")
        if ops == ["eq"]:
            return _equals(path, node["eq"], f"{where}.eq")
        if ops == ["in"]:
            return self._in(path, node["in"], f"{where}.in")
        return self._range(path, {op: node[op] for op in ops}, where)

    def _in(self, path: str, values, where: str) -> tuple[str, list]:
        if not isinstance(values, list) or not values:
            raise InputError(f"{where}: expected a non-empty list of values")
        if len(values) > MAX_IN_VALUES:
            raise InputError(f"{where}: at most {MAX_IN_VALUES} values")
        parts = [_equals(path, v, f"{where}[{i}]") for i, v in enumerate(values)]
        return "(" + " OR ".join(sql for sql, _ in parts) + ")", [p for _, ps in parts for p in ps]

    def _range(self, path: str, bounds: dict, where: str) -> tuple[str, list]:
        kinds = {_kind(v, f"{where}.{op}") for op, v in bounds.items()}
        if not kinds <= {"number", "text"}:
            raise InputError(f"{where}: range bounds must be numbers or strings")
        if len(kinds) > 1:
            raise InputError(f"{where}: range bounds must all be numbers or all be strings")
        typed, params = _typed(path, kinds.pop())
        sql = [typed]
        for op, value in bounds.items():
            sql.append(f"json_extract(metadata, ?) {RANGE_OPS[op]} ?")
            params += [path, value]
        return "(" + " AND ".join(sql) + ")", params


def compile_filter(node) -> CompiledFilter:
    """Check a filter object and compile it; InputError naming the bad part (`filter.and[1].in`)."""
    sql, params = _Compiler().compile(node, "filter", 0)
    return CompiledFilter(sql, tuple(params))
