"""Live feature views: windows that end at the request instant, computed at read time from the commit versions
kept online, and the same windows computed offline as known at each entity row's instant (ADR 0016).

Why not Feast's own ``StreamFeatureView`` + ``Aggregation`` + tiling: its tiles are stamped at the tile's end and
written online as finished values (a window does not decay until the next write), ``count_distinct`` is refused
outside Spark/Ray, tiling ignores when an event arrived, and ``FeatureStore.push`` writes rows as given without
applying a stream view's aggregations. So the online store keeps an intermediate representation — the *versions*
of each commit of the entity (``add``/``retract``, committed_at, author, the instant it became known and its log
sequence) — and every read evaluates the windows at the serving clock's instant T
(:func:`skewless.feast_ext.clock.serving_now`). Offline, :func:`historical_columns` evaluates the same
declarations (:class:`skewless.features.definitions.LiveTable`) at every entity row's T from
``abukix.commit_events`` in one DuckDB query. The rule, both sides:

    a commit counts at T iff, among its versions known at T (known_at <= T), the last-arrived one (arrived_at,
    then log sequence; ADR 0017) is an ``add`` and its committed_at < T; windows are [T - w, T).

Where the versions live: the local profile's SQLite online DB (table ``<project>__live__<view>``) or Redis (one hash
per entity, ``skewless:<project>:live:<view>:<entity>``, field ``sha:known_us:seq``). Writes are idempotent (a
version is a set element), so a redelivered batch is applied again harmlessly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import pyarrow as pa
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from skewless.core.days import epoch_us
from skewless.core.errors import SkewlessError
from skewless.feast_ext.clock import serving_now
from skewless.features.definitions import LIVE_TABLES, LiveTable

if TYPE_CHECKING:
    from feast.feature_view import FeatureView
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.repo_config import RepoConfig

_US = 1_000_000
LIVE = {t.name: t for t in LIVE_TABLES}


class LiveViewError(SkewlessError, ValueError):
    """A write that a live view cannot take (finished feature values instead of commit events)."""


class Version(NamedTuple):
    """One version of one commit of an entity, as kept online."""

    sha: str
    known_us: int
    seq: int
    kind: str
    committed_us: int  # 0 for a retraction (it withdraws the commit whatever its values)
    author: Optional[str]
    arrived_us: int

    @property
    def order(self) -> tuple[int, int]:
        """Arrival order: the last-arrived version known at T decides (ADR 0017)."""
        return self.arrived_us, self.seq


def live_table(view_name: str) -> Optional[LiveTable]:
    return LIVE.get(view_name)


def evaluate(table: LiveTable, versions: Iterable[Version], at_us: int) -> dict[str, Any]:
    """The features of ``table`` for one entity at instant ``at_us`` (microseconds since the epoch, UTC)."""
    latest: dict[str, Version] = {}
    for v in versions:
        if v.known_us <= at_us:
            held = latest.get(v.sha)
            if held is None or v.order > held.order:
                latest[v.sha] = v
    present = [v for v in latest.values() if v.kind == "add" and v.committed_us < at_us]
    out: dict[str, Any] = {}
    for f in table.features:
        if f.aggregation == "seconds_since_last":
            out[f.name] = (at_us - max(v.committed_us for v in present)) / _US if present else None
            continue
        assert f.window is not None
        lower = at_us - f.window // timedelta(microseconds=1)
        inside = [v for v in present if v.committed_us >= lower]
        if f.aggregation == "count":
            out[f.name] = len(inside)
        elif f.aggregation == "count_distinct":
            out[f.name] = len({getattr(v, "author" if f.column == "author_id" else f.column) for v in inside})
        else:
            raise ValueError(f"feature {f.name}: unknown aggregation {f.aggregation!r}")
    return out


#: Commits older than every window that a rebuilt online state keeps per entity (the newest by committed_at), for
#: ``seconds_since_last``: it stays exact at every later instant unless this many of them are retracted later.
OLD_KEPT = 64


def still_needed(versions: Sequence[Version], now_us: int, tables: Sequence[LiveTable] = LIVE_TABLES,
                 old_kept: int = OLD_KEPT) -> list[Version]:
    """The versions of one entity that a read at any instant T >= ``now_us`` can need (a rebuilt online state holds
    only these, so a long history backfilled into the lake does not make every online read parse all of it).

    Per commit: when every version is known by ``now_us``, only the last-arrived one can decide at T >= now — none
    if it is a retraction, and for an add older than the longest window (``committed_at < now - window``) only the
    ``old_kept`` newest such adds of the entity are kept (they matter only to ``seconds_since_last``). A commit with
    a version known after ``now_us`` keeps all its versions. Exact for every window at T >= now.
    """
    widest = max((f.window for t in tables for f in t.features if f.window is not None), default=timedelta(0))
    horizon = now_us - widest // timedelta(microseconds=1)
    by_sha: dict[str, list[Version]] = {}
    for v in versions:
        by_sha.setdefault(v.sha, []).append(v)
    keep: list[Version] = []
    old: list[Version] = []
    for vs in by_sha.values():
        if any(v.known_us > now_us for v in vs):
            keep.extend(vs)
            continue
        last = max(vs, key=lambda v: v.order)
        if last.kind != "add":
            continue
        (keep if last.committed_us >= horizon else old).append(last)
    old.sort(key=lambda v: v.committed_us, reverse=True)
    return keep + old[:old_kept]


def versions_of(rows: pa.Table) -> dict[str, list[Version]]:
    """Versions from ``abukix.commit_events`` rows (or a batch of them), grouped by repository."""
    out: dict[str, list[Version]] = {}
    cols = {c: rows.column(c).to_pylist() for c in ("repo", "sha", "known_at", "seq", "kind", "committed_at",
                                                     "author_id", "arrived_at")}
    for i in range(rows.num_rows):
        committed = cols["committed_at"][i]
        out.setdefault(cols["repo"][i], []).append(Version(
            cols["sha"][i], epoch_us(cols["known_at"][i]), int(cols["seq"][i]), cols["kind"][i],
            epoch_us(committed) if committed is not None else 0, cols["author_id"][i], epoch_us(cols["arrived_at"][i])))
    return out


# --- where the versions live online ---------------------------------------------------------------------------
def _field(v: Version) -> str:
    return f"{v.sha}:{v.known_us}:{v.seq}"


def _value(v: Version) -> str:
    return f"{v.kind}|{v.committed_us}|{v.arrived_us}|{v.author or ''}"


def _parse(field: str, value: str) -> Version:
    sha, known, seq = field.rsplit(":", 2)
    kind, committed, arrived, author = value.split("|", 3)
    return Version(sha, int(known), int(seq), kind, int(committed), author or None, int(arrived))


def _sqlite_table(config: "RepoConfig", view: str) -> str:
    return f'"{config.project}__live__{view}"'


def _sqlite_meta(config: "RepoConfig") -> str:
    return f'"{config.project}__live_meta"'


#: The entity-less key of a live view's mark (no repository is named with a leading '#').
MARK = "#state"


def _redis_key(config: "RepoConfig", view: str, entity: str) -> str:
    return f"skewless:{config.project}:live:{view}:{entity}"


def _entity(key: "EntityKeyProto") -> str:
    if len(key.entity_values) != 1:
        raise LiveViewError(f"a live view has one join key, got {list(key.join_keys)}")
    return key.entity_values[0].string_val


def _proto(value: Any) -> ValueProto:
    if value is None:
        return ValueProto()
    if isinstance(value, int):
        return ValueProto(int64_val=value)
    return ValueProto(double_val=float(value))


class LiveReadMixin:
    """Mixin for skewless's online stores (SQLite: local, Redis: production): reads of a live view evaluate its
    windows at the serving clock's instant from the versions held online; writes of finished values to it are
    refused (events go through ``skewless events push``). Put it first in the bases."""

    # --- reads -----------------------------------------------------------------------------------------------
    def online_read(self, config: "RepoConfig", table: "FeatureView", entity_keys: list["EntityKeyProto"],
                    requested_features: Optional[list[str]] = None):
        definition = live_table(table.name)
        if definition is None:
            return super().online_read(config, table, entity_keys, requested_features)  # type: ignore[misc]
        at = serving_now()
        held = self.read_live_versions(config, table.name, [_entity(k) for k in entity_keys])
        at_us = epoch_us(at)
        wanted = set(requested_features or [f.name for f in definition.features])
        rows = []
        for versions in held:
            values = evaluate(definition, versions, at_us)
            rows.append((at, {n: _proto(v) for n, v in values.items() if n in wanted}))
        return rows

    async def online_read_async(self, config: "RepoConfig", table: "FeatureView", entity_keys: list["EntityKeyProto"],
                                requested_features: Optional[list[str]] = None):
        if live_table(table.name) is None:
            return await super().online_read_async(config, table, entity_keys, requested_features)  # type: ignore[misc]
        return self.online_read(config, table, entity_keys, requested_features)

    # --- writes ----------------------------------------------------------------------------------------------
    def online_write_batch(self, config: "RepoConfig", table: "FeatureView", data, progress) -> None:
        if live_table(table.name) is not None:
            raise LiveViewError(
                f"feature view {table.name} is live: its values are computed at read time from commit events, so "
                "finished values cannot be written to it (materialize / push). Send the commits with `skewless "
                "events push` (or the webhook) and run `skewless stream run`")
        return super().online_write_batch(config, table, data, progress)  # type: ignore[misc]

    def write_live_versions(self, config: "RepoConfig", view: str, versions: dict[str, list[Version]]) -> None:
        """Add versions (grouped by entity) to what the online store holds for live view ``view`` (idempotent)."""
        if not versions:
            return
        if self._is_sqlite():
            con = self._get_conn(config)  # type: ignore[attr-defined]
            self._ensure_sqlite(con, config, view)
            with con:
                con.executemany(
                    f"INSERT OR IGNORE INTO {_sqlite_table(config, view)} (entity, field, value) VALUES (?, ?, ?)",
                    [(e, _field(v), _value(v)) for e, vs in versions.items() for v in vs])
            return
        client = self._get_client(config.online_store)  # type: ignore[attr-defined]
        pipe = client.pipeline(transaction=False)
        for entity, vs in versions.items():
            pipe.hset(_redis_key(config, view, entity), mapping={_field(v): _value(v) for v in vs})
        pipe.execute()

    def read_live_versions(self, config: "RepoConfig", view: str, entities: Sequence[str]) -> list[list[Version]]:
        """The versions held online for each entity (in order; [] for an unknown one)."""
        if self._is_sqlite():
            con = self._get_conn(config)  # type: ignore[attr-defined]
            self._ensure_sqlite(con, config, view)
            found: dict[str, list[Version]] = {}
            unique = sorted(set(entities))
            for i in range(0, len(unique), 500):
                chunk = unique[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for entity, field, value in con.execute(
                        f"SELECT entity, field, value FROM {_sqlite_table(config, view)} WHERE entity IN ({marks})",
                        chunk):
                    found.setdefault(entity, []).append(_parse(field, value))
            return [found.get(e, []) for e in entities]
        client = self._get_client(config.online_store)  # type: ignore[attr-defined]
        pipe = client.pipeline(transaction=False)
        for e in entities:
            pipe.hgetall(_redis_key(config, view, e))
        out = []
        for held in pipe.execute():
            out.append([_parse(_text(f), _text(v)) for f, v in held.items()])
        return out

    def clear_live_versions(self, config: "RepoConfig", view: str) -> None:
        """Forget every version held for ``view`` (before a rebuild from ``abukix.commit_events``)."""
        if self._is_sqlite():
            con = self._get_conn(config)  # type: ignore[attr-defined]
            self._ensure_sqlite(con, config, view)
            with con:
                con.execute(f"DELETE FROM {_sqlite_table(config, view)}")
            return
        client = self._get_client(config.online_store)  # type: ignore[attr-defined]
        keys = list(client.scan_iter(match=_redis_key(config, view, "*"), count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])

    # --- did the online store keep the versions? ------------------------------------------------------------------
    def live_state_mark(self, config: "RepoConfig", view: str) -> Optional[str]:
        """The mark the processor set after it (re)built ``view``'s versions; None when the online store does not
        hold it (a new store, a flushed or restarted Redis without persistence): the versions must be rebuilt."""
        if self._is_sqlite():
            con = self._get_conn(config)  # type: ignore[attr-defined]
            self._ensure_sqlite(con, config, view)
            row = con.execute(f"SELECT mark FROM {_sqlite_meta(config)} WHERE view = ?", (view,)).fetchone()
            return row[0] if row else None
        held = self._get_client(config.online_store).get(_redis_key(config, view, MARK))  # type: ignore[attr-defined]
        return None if held is None else _text(held)

    def set_live_state_mark(self, config: "RepoConfig", view: str, mark: str) -> None:
        if self._is_sqlite():
            con = self._get_conn(config)  # type: ignore[attr-defined]
            self._ensure_sqlite(con, config, view)
            with con:
                con.execute(f"INSERT OR REPLACE INTO {_sqlite_meta(config)} (view, mark) VALUES (?, ?)", (view, mark))
            return
        self._get_client(config.online_store).set(_redis_key(config, view, MARK), mark)  # type: ignore[attr-defined]

    def _is_sqlite(self) -> bool:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        return isinstance(self, SqliteOnlineStore)

    @staticmethod
    def _ensure_sqlite(con, config: "RepoConfig", view: str) -> None:
        con.execute(f"CREATE TABLE IF NOT EXISTS {_sqlite_table(config, view)} (entity TEXT NOT NULL, "
                    "field TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (entity, field))")
        con.execute(f"CREATE TABLE IF NOT EXISTS {_sqlite_meta(config)} (view TEXT PRIMARY KEY, mark TEXT NOT NULL)")


def _text(b: Any) -> str:
    return b.decode() if isinstance(b, (bytes, bytearray)) else str(b)


# --- offline: the same windows at every entity row's instant ----------------------------------------------------
def historical_sql(table: LiveTable, key_column: str, ts_column: str, row_column: str,
                   output: dict[str, str]) -> str:
    """DuckDB SQL over ``entity`` (``row_column``, ``key_column``, ``ts_column`` TIMESTAMPTZ) and ``__live`` (the
    versions: repo, sha, kind, committed_at, author_id, known_at, arrived_at, seq) giving one row per entity row with the
    features of ``table`` named by ``output`` (feature name -> output column)."""
    q = _quote
    t = f"e.{q(ts_column)}"
    aggs = []
    for f in table.features:
        if f.name not in output:
            continue
        col = q(output[f.name])
        present = "v.kind = 'add' AND v.committed_at < v.t"
        if f.aggregation == "seconds_since_last":
            aggs.append(f"(epoch_us(any_value(v.t)) - epoch_us(max(v.committed_at) FILTER (WHERE {present}))) "
                        f"/ 1000000.0 AS {col}")
            continue
        assert f.window is not None
        window_us = f.window // timedelta(microseconds=1)
        inside = f"{present} AND v.committed_at >= v.t - INTERVAL ({window_us}) MICROSECOND"
        if f.aggregation == "count":
            aggs.append(f"count(*) FILTER (WHERE {inside}) AS {col}")
        else:
            aggs.append(f"count(DISTINCT v.{q(f.column or '')}) FILTER (WHERE {inside}) AS {col}")
    return f"""
WITH v AS (
    SELECT e.{q(row_column)} AS r, {t} AS t, x.sha, x.kind, x.committed_at, x.author_id
    FROM entity e JOIN __live x ON x.repo = e.{q(key_column)} AND x.known_at <= {t}
    QUALIFY row_number() OVER (PARTITION BY e.{q(row_column)}, x.sha ORDER BY x.arrived_at DESC, x.seq DESC) = 1
)
SELECT r AS {q(row_column)}, {', '.join(aggs)} FROM v GROUP BY r
"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
