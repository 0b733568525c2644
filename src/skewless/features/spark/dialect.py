"""Render the feature SQL of :mod:`skewless.features` (DuckDB, the one source of truth) for Spark SQL.

The Spark engine runs the SAME SQL text as DuckDB: :func:`to_spark` parses it with sqlglot's DuckDB dialect, applies
the few rewrites below for what Spark SQL lacks or does differently (rules 1-4) or plans badly (rule 5), and prints it with sqlglot's Spark dialect
(which already maps ``unnest``→``explode``, ``generate_series``→``sequence``, ``::T``→``CAST``, ``$p``→``:p``).
Every rule is exact (same rows, same values), small, and tested in ``tests/test_spark.py``; SQL that uses a DuckDB
construct outside these rules fails here with :class:`TranslationError` instead of running with other semantics.

Rules
-----
1. ``a ASOF LEFT JOIN b ON a.k = b.k [AND ...] AND a.t > b.t`` (or ``>=``; Spark has no ASOF join) becomes a
   union of ``a`` and ``b`` rows ordered by ``t`` inside each key, where every ``a`` row takes the latest ``b`` row
   before it: ``last(named_struct(b columns), ignoreNulls) OVER (PARTITION BY k ORDER BY t, side)``. Ties: with
   ``>`` an ``a`` row sorts before a ``b`` row of the same ``t`` (not matched), with ``>=`` after it (matched).
   ``b`` rows with a NULL key or ``t`` never match (as in DuckDB). One sort per key instead of a range join.
   The SELECT must qualify every column (``d.repo``, not ``repo``) so that each side's columns are known.
2. ``epoch_us(ts)`` → ``unix_micros(ts)`` (microseconds since the epoch, BIGINT in both).
3. ``to_days(n)`` → ``make_dt_interval(n)`` (an interval of n days).
4. ``x / y`` → ``CAST(x AS DOUBLE) / CAST(y AS DOUBLE)``: DuckDB's ``/`` is always floating-point division (DOUBLE
   even for DECIMAL operands such as ``86400000000.0``); Spark's returns DECIMAL for DECIMAL operands (rounded to
   its scale), which would change the last digits of ``days_since_last_commit``.

5. A band join ``a LEFT JOIN b ON a.k = b.k AND b.t >= a.x - INTERVAL lo AND b.t < a.x [- INTERVAL hi]`` (the
   trailing windows) gets one more equality, ``b.__band = floor(unix_micros(a.x) / W)`` with ``W = lo - hi``,
   where each ``b`` row is repeated into the (at most two) buckets of the ``a.x`` it can match (``b.t`` NULL: none,
   as it can match nothing). Every matching pair still meets exactly once and the band condition stays, so the
   result is the same; Spark, which has no range join, then joins on ``(k, bucket)`` instead of comparing every
   ``b`` row of a key with every ``a`` row of that key (for rails: 8k days × 90k commits per window CTE).

Constructs that need no rule (same meaning in Spark 3.5 SQL with the session time zone set to UTC, which
:func:`skewless.features.spark.session` does): ``date_trunc('day'|'week', ts)`` (weeks start on Monday in both), aggregate
``FILTER (WHERE ...)``, ``GROUP BY ALL``, ``ts ± INTERVAL n DAY``, ``greatest``, window functions over aggregates,
``UNION`` (distinct), unaliased subqueries in FROM.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from skewless.core.errors import SkewlessError


class TranslationError(SkewlessError, ValueError):
    """The DuckDB SQL uses a construct this translation has no exact Spark rule for."""


# --- rule 1: ASOF LEFT JOIN -> window ----------------------------------------------------------------------------

_PREFIX = "__asof"
#: A comparison with its operands swapped.
_MIRROR = {exp.EQ: exp.EQ, exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE}


def _conjuncts(cond: exp.Expression) -> list[exp.Expression]:
    return list(cond.flatten()) if isinstance(cond, exp.And) else [cond]


def _side_of(col: exp.Expression, a: str, b: str) -> str | None:
    if isinstance(col, exp.Column) and col.table in (a, b):
        return col.table
    return None


def _asof_parts(select: exp.Select, join: exp.Join) -> tuple[exp.Table, exp.Table, list[tuple[str, str]],
                                                               tuple[str, str, bool]]:
    """(a table, b table, [(a key, b key)], (a t, b t, inclusive)) of an ASOF LEFT JOIN, or TranslationError."""
    frm = select.args.get("from_")
    a, b = (frm.this if frm else None), join.this
    if not isinstance(a, exp.Table) or not isinstance(b, exp.Table) or len(select.args.get("joins") or []) != 1:
        raise TranslationError("ASOF JOIN is translated only as `FROM <table> [AS a] ASOF LEFT JOIN <table> "
                               f"[AS b] ON ...` with no other join: {select.sql('duckdb')[:200]}")
    if (join.args.get("side") or "").upper() != "LEFT":
        raise TranslationError(f"only ASOF LEFT JOIN is translated, not {join.sql('duckdb')[:120]}")
    an, bn = a.alias_or_name, b.alias_or_name
    keys: list[tuple[str, str]] = []
    ineq: tuple[str, str, bool] | None = None
    for c in _conjuncts(join.args["on"]):
        kind, left, right = type(c), c.this, c.expression
        sides = (_side_of(left, an, bn), _side_of(right, an, bn))
        if kind not in _MIRROR or None in sides or sides[0] == sides[1]:
            raise TranslationError(f"ASOF condition {c.sql('duckdb')} must compare a column of {an} with one of {bn}")
        if sides[0] == bn:  # orient as (a, b): b.t < a.t  is  a.t > b.t
            kind, left, right = _MIRROR[kind], right, left
        if kind is exp.EQ:
            keys.append((left.name, right.name))
        elif kind in (exp.GT, exp.GTE) and ineq is None:
            ineq = (left.name, right.name, kind is exp.GTE)
        else:
            raise TranslationError(f"ASOF condition {c.sql('duckdb')} is not `a.k = b.k` or the one `a.t > b.t` "
                                   "/ `a.t >= b.t` (the 'latest b before a' form)")
    if ineq is None:
        raise TranslationError(f"ASOF JOIN without an inequality: {join.sql('duckdb')[:120]}")
    return a, b, keys, ineq


def _asof_to_window(select: exp.Select) -> exp.Select:
    join = next(j for j in select.args["joins"] if j.args.get("method", "").upper() == "ASOF")
    a, b, keys, (a_t, b_t, inclusive) = _asof_parts(select, join)
    an, bn = a.alias_or_name, b.alias_or_name
    cols = [c for c in select.find_all(exp.Column) if not (c.find_ancestor(exp.Join) is join)]
    unqualified = sorted({c.name for c in cols if not c.table})
    if unqualified:
        raise TranslationError(f"qualify {', '.join(unqualified)} (with {an}. or {bn}.) in the SELECT that has the "
                               "ASOF JOIN: the translation must know which side each column comes from")
    a_cols = sorted({c.name for c in cols if c.table == an} | {a_t} | {k for k, _ in keys})
    b_cols = sorted({c.name for c in cols if c.table == bn} | {b_t})
    a_side, b_side = (1, 0) if inclusive else (0, 1)
    a_ref, b_ref = a.copy(), b.copy()
    a_ref.set("alias", None)
    b_ref.set("alias", None)
    kcols = [f"{_PREFIX}_k{i}" for i in range(len(keys))]
    lt, rt = f"{_PREFIX}_l", f"{_PREFIX}_r"  # the two sides inside the union
    a_branch = ", ".join([f"{lt}.{c} AS {c}" for c in a_cols] + [f"{lt}.{ak} AS {k}" for (ak, _), k in zip(keys, kcols)]
                         + [f"{lt}.{a_t} AS {_PREFIX}_t", f"{a_side} AS {_PREFIX}_side", f"NULL AS {_PREFIX}_b"])
    struct = ", ".join(f"'{c}', {rt}.{c}" for c in b_cols)
    b_branch = ", ".join([f"NULL AS {c}" for c in a_cols] + [f"{rt}.{bk} AS {k}" for (_, bk), k in zip(keys, kcols)]
                         + [f"{rt}.{b_t} AS {_PREFIX}_t", f"{b_side} AS {_PREFIX}_side",
                            f"named_struct({struct}) AS {_PREFIX}_b"])
    b_valid = " AND ".join(f"{rt}.{c} IS NOT NULL" for c in [bk for _, bk in keys] + [b_t])
    partition = f"PARTITION BY {', '.join(kcols)} " if kcols else ""
    derived = f"""(
        SELECT {', '.join(a_cols)}, {', '.join(f'{_PREFIX}_b.{c} AS {_PREFIX}_{bn}_{c}' for c in b_cols)}
        FROM (
            SELECT {', '.join(a_cols)}, {_PREFIX}_side,
                last({_PREFIX}_b, true) OVER ({partition}ORDER BY {_PREFIX}_t, {_PREFIX}_side
                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {_PREFIX}_b
            FROM (
                SELECT {a_branch} FROM {a_ref.sql('spark')} AS {lt}
                UNION ALL
                SELECT {b_branch} FROM {b_ref.sql('spark')} AS {rt} WHERE {b_valid}
            )
        )
        WHERE {_PREFIX}_side = {a_side}
    ) AS {an}"""
    out = select.copy()
    for c in list(out.find_all(exp.Column)):  # before the derived table goes in: its own columns stay as they are
        if c.table == bn:
            c.replace(exp.column(f"{_PREFIX}_{bn}_{c.name}", table=an))
    out.set("joins", None)
    out.set("from_", sqlglot.parse_one(f"SELECT * FROM {derived}", read="spark").args["from_"])
    return out


def _asof_rule(node: exp.Expression) -> exp.Expression:
    """Rule 1 (a SELECT with an ASOF JOIN becomes one over the windowed union)."""
    if isinstance(node, exp.Select) and any(
            (j.args.get("method") or "").upper() == "ASOF" for j in node.args.get("joins") or []):
        return _asof_to_window(node)
    return node


# --- rules 2-4: functions and operators --------------------------------------------------------------------------

def _scalar_rule(node: exp.Expression) -> exp.Expression:
    """Rules 2-4. Division is rewritten in place so that its operands are still visited."""
    if isinstance(node, exp.Anonymous) and node.name.lower() == "epoch_us":
        return exp.Anonymous(this="unix_micros", expressions=[e.transform(_scalar_rule) for e in node.expressions])
    if isinstance(node, exp.ToDays):
        return exp.Anonymous(this="make_dt_interval", expressions=[node.this.transform(_scalar_rule)])
    if isinstance(node, exp.Div):
        for arg in ("this", "expression"):
            operand = node.args[arg]
            if not (isinstance(operand, exp.Cast) and operand.to.is_type("double")):
                node.set(arg, exp.cast(operand, "DOUBLE"))
    return node


# --- rule 5: band joins get a bucket key ---------------------------------------------------------------------------

_UNIT_US = {"DAY": 86_400_000_000, "HOUR": 3_600_000_000, "MINUTE": 60_000_000, "SECOND": 1_000_000}
_BAND = "__band"


def _offset_us(expr: exp.Expression, a: str) -> tuple[exp.Column, int] | None:
    """``a.x`` -> (a.x, 0); ``a.x - INTERVAL n UNIT`` -> (a.x, n in µs); anything else -> None."""
    if isinstance(expr, exp.Column) and expr.table == a:
        return expr, 0
    if isinstance(expr, exp.Sub) and isinstance(expr.expression, exp.Interval):
        col, iv = expr.this, expr.expression
        unit = (iv.args.get("unit").name if iv.args.get("unit") else "").upper()
        if isinstance(col, exp.Column) and col.table == a and unit in _UNIT_US and iv.this.name.isdigit():
            return col, int(iv.this.name) * _UNIT_US[unit]
    return None


def _band_rule(node: exp.Expression) -> exp.Expression:
    """Rule 5 on a SELECT ``FROM a JOIN b`` / ``LEFT JOIN b`` whose ON holds a band on one column of ``b``."""
    if not isinstance(node, exp.Select):
        return node
    frm = node.args.get("from_")
    joins = node.args.get("joins") or []
    if not frm or not isinstance(frm.this, exp.Table) or len(joins) != 1:
        return node
    join = joins[0]
    if (join.args.get("side") or "").upper() not in ("", "LEFT") or join.args.get("kind") or join.args.get("method") \
            or not isinstance(join.this, exp.Table) or join.args.get("on") is None:
        return node
    an, bn = frm.this.alias_or_name, join.this.alias_or_name
    lower: tuple[str, exp.Column, int] | None = None  # (b.t, a.x, lo): b.t >= a.x - lo
    upper: tuple[str, exp.Column, int] | None = None  # (b.t, a.x, hi): b.t <  a.x - hi
    has_key = False
    for c in _conjuncts(join.args["on"]):
        kind, left, right = type(c), c.this, c.expression
        if kind not in _MIRROR:
            continue
        if not (isinstance(left, exp.Column) and left.table == bn):
            kind, left, right = _MIRROR[kind], right, left
        if not (isinstance(left, exp.Column) and left.table == bn):
            continue
        if kind is exp.EQ and isinstance(right, exp.Column) and right.table == an:
            has_key = True
            continue
        off = _offset_us(right, an)
        if off is None:
            continue
        if kind in (exp.GT, exp.GTE) and lower is None:
            lower = (left.name, off[0], off[1])
        elif kind in (exp.LT, exp.LTE) and upper is None:
            upper = (left.name, off[0], off[1])
    if not (has_key and lower and upper and lower[0] == upper[0] and lower[1].name == upper[1].name
            and lower[2] > upper[2]):
        return node
    t, x, lo, hi = lower[0], lower[1].name, lower[2], upper[2]
    width = lo - hi  # a.x lies in [b.t + hi, b.t + lo]: at most two buckets of this width
    b_ref = join.this.copy()
    b_ref.set("alias", None)
    bucketed = sqlglot.parse_one(
        f"SELECT * FROM (SELECT *, explode(sequence(floor((unix_micros({t}) + {hi}) / {width}), "
        f"floor((unix_micros({t}) + {lo}) / {width}))) AS {_BAND} FROM {b_ref.sql('spark')}) AS {bn}",
        read="spark").args["from_"].this
    out = node.copy()
    out.args["joins"][0].set("this", bucketed)
    out.args["joins"][0].set("on", exp.and_(
        out.args["joins"][0].args["on"],
        sqlglot.parse_one(f"{bn}.{_BAND} = floor(unix_micros({an}.{x}) / {width})", read="spark")))
    return out


def to_spark(sql: str) -> str:
    """The DuckDB feature SQL ``sql`` as Spark SQL (parameters stay named: ``$until`` → ``:until``)."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise TranslationError(f"not DuckDB SQL sqlglot can read: {e}") from None
    tree = tree.transform(_asof_rule).transform(_scalar_rule).transform(_band_rule)
    return tree.sql(dialect="spark", pretty=True)
