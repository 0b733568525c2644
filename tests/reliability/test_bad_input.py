"""Bad input, generated: ingest of mutated Parquet files, and historical retrieval with awkward entity rows.

``ingest`` (hypothesis): each example takes fresh valid commits and applies a random set of mutations — a column
dropped or retyped, nulls, empty strings, malformed shas, negative or out-of-range counts, timezone-naive,
far-future or unparsable timestamps, conflicting or exact duplicates, null list elements — or corrupts the file's
bytes. The outcome is either an ``IngestError`` naming the file and the problem with the table at the very same
snapshot, or (for inputs skewless documents as accepted: exact duplicates, other integer widths, nanosecond or
non-UTC timestamps, ISO strings with an offset, dictionary or large strings, extra columns) every commit stored
exactly once with its values normalized. Any other exception fails the test.

``get_historical_features`` (hypothesis): entity rows with naive (= UTC), offset or nanosecond timestamps, unknown
entities and duplicated rows, compared with the point-in-time rule computed directly from the Iceberg feature
tables (newest row at or before T, null when older than T - ttl; D = the UTC day of T, so a nanosecond before
midnight is still that day).
"""

from __future__ import annotations

import math
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability import deployment
from reliability.servers import local_env
from skewless import features, lake
from skewless.lake import ingest

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SKEWLESS_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# --- ingest ---------------------------------------------------------------------------------------------------------

#: mutation -> fragment the IngestError must contain (None: accepted input, stored normalized).
MUTATIONS = {
    "drop_column": "missing column",
    "int_as_string": "has type string, expected int32",
    "int_as_float": "has type double, expected int32",
    "bool_as_int": "column is_merge has type",
    "null_value": "null value",
    "empty_string": "has empty strings",
    "bad_sha": "full lower-case hex commit id",
    "negative_count": "has negative values",
    "int_overflow": "outside int32",
    "naive_timestamp": "without time zone",
    "far_future": "dated in the future",
    "unparsable_string_ts": "unparsable timestamp",
    "naive_string_ts": "without a UTC offset",
    "conflicting_duplicate": "appears twice with different values",
    "languages_not_list": "column languages has type",
    "null_language": "null",
    # accepted
    "exact_duplicate": None,
    "int64_counts": None,
    "nanosecond_ts": None,
    "offset_ts": None,
    "iso_string_ts": None,
    "dictionary_strings": None,
    "large_strings": None,
    "extra_column": None,
}


def _set(t: pa.Table, name: str, col) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, col)


def mutate(t: pa.Table, kind: str, i: int) -> pa.Table:
    """Apply one mutation to table ``t`` (row ``i`` where a single row is damaged)."""
    n = t.num_rows
    if kind == "drop_column":
        return t.drop_columns([t.column_names[i % len(t.column_names)]])
    if kind == "int_as_string":
        return _set(t, "files_changed", pc.cast(t["files_changed"], pa.string()))
    if kind == "int_as_float":
        return _set(t, "lines_added", pc.cast(t["lines_added"], pa.float64()))
    if kind == "bool_as_int":
        return _set(t, "is_merge", pc.cast(t["is_merge"], pa.int8()))
    if kind == "null_value":
        name = ("repo", "sha", "author_id", "committed_at", "lines_deleted")[i % 5]
        values = t[name].to_pylist()
        values[i % n] = None
        return _set(t, name, pa.array(values, t[name].type))
    if kind == "empty_string":
        name = ("repo", "author_id")[i % 2]
        values = t[name].to_pylist()
        values[i % n] = ""
        return _set(t, name, pa.array(values, pa.string()))
    if kind == "bad_sha":
        values = t["sha"].to_pylist()
        values[i % n] = values[i % n].upper() if i % 2 else values[i % n][:12]
        return _set(t, "sha", pa.array(values, pa.string()))
    if kind == "negative_count":
        values = t["lines_deleted"].to_pylist()
        values[i % n] = -1 - i
        return _set(t, "lines_deleted", pa.array(values, pa.int32()))
    if kind == "int_overflow":
        values = [int(v) for v in t["lines_added"].to_pylist()]
        values[i % n] = 2**31 + i
        return _set(t, "lines_added", pa.array(values, pa.int64()))
    if kind == "naive_timestamp":
        name = ("authored_at", "committed_at")[i % 2]
        return _set(t, name, t[name].cast(pa.timestamp("us")))
    if kind == "far_future":
        values = t["committed_at"].to_pylist()
        values[i % n] = datetime(2100 + i % 800, 1, 1, tzinfo=timezone.utc)
        return _set(t, "committed_at", pa.array(values, pa.timestamp("us", tz="UTC")))
    if kind == "unparsable_string_ts":
        values = [v.isoformat() for v in t["authored_at"].to_pylist()]
        values[i % n] = "not a time"
        return _set(t, "authored_at", pa.array(values, pa.string()))
    if kind == "naive_string_ts":
        return _set(t, "committed_at", pa.array([v.strftime("%Y-%m-%dT%H:%M:%S") for v in
                                                 t["committed_at"].to_pylist()], pa.string()))
    if kind == "conflicting_duplicate":
        row = t.slice(i % n, 1)
        return pa.concat_tables([t, _set(row, "files_changed", pa.array([row["files_changed"][0].as_py() + 1],
                                                                          pa.int32()))])
    if kind == "languages_not_list":
        return _set(t, "languages", pa.array([",".join(v) for v in t["languages"].to_pylist()], pa.string()))
    if kind == "null_language":
        values = t["languages"].to_pylist()
        values[i % n] = [None, *values[i % n]]
        return _set(t, "languages", pa.array(values, pa.list_(pa.string())))
    if kind == "exact_duplicate":
        return pa.concat_tables([t, t.slice(i % n, 1 + i % 3)])
    if kind == "int64_counts":
        return _set(t, "files_changed", pc.cast(t["files_changed"], pa.int64()))
    if kind == "nanosecond_ts":
        return _set(t, "committed_at", pc.cast(t["committed_at"], pa.timestamp("ns", tz="UTC")))
    if kind == "offset_ts":
        return _set(t, "authored_at", t["authored_at"].cast(pa.timestamp("us", tz="Asia/Kolkata")))
    if kind == "iso_string_ts":
        return _set(t, "committed_at", pa.array([v.astimezone(timezone(timedelta(hours=-(i % 12)))).isoformat()
                                                 for v in t["committed_at"].to_pylist()], pa.string()))
    if kind == "dictionary_strings":
        return _set(t, "repo", pc.dictionary_encode(t["repo"]))
    if kind == "large_strings":
        return _set(t, "author_id", t["author_id"].cast(pa.large_string()))
    if kind == "extra_column":
        return t.append_column("comment", pa.array(["x"] * n))
    raise ValueError(kind)


ROWS = "<rows>"
_COLUMN_OF = {"int_as_string": "files_changed", "int_as_float": "lines_added", "bool_as_int": "is_merge",
              "bad_sha": "sha", "negative_count": "lines_deleted", "int_overflow": "lines_added",
              "far_future": "committed_at", "unparsable_string_ts": "authored_at", "naive_string_ts": "committed_at",
              "languages_not_list": "languages", "null_language": "languages", "exact_duplicate": ROWS,
              "int64_counts": "files_changed", "nanosecond_ts": "committed_at", "offset_ts": "authored_at",
              "iso_string_ts": "committed_at", "dictionary_strings": "repo", "large_strings": "author_id"}


def touched(kind: str, i: int, t: pa.Table) -> set[str]:
    """The columns (and ROWS for row-count changes) a mutation changes: an example combines disjoint ones."""
    if kind == "drop_column":
        return {t.column_names[i % len(t.column_names)]}
    if kind == "null_value":
        return {("repo", "sha", "author_id", "committed_at", "lines_deleted")[i % 5]}
    if kind == "empty_string":
        return {("repo", "author_id")[i % 2]}
    if kind == "naive_timestamp":
        return {("authored_at", "committed_at")[i % 2]}
    if kind == "conflicting_duplicate":
        return {ROWS, "files_changed"}
    if kind == "extra_column":
        return {"comment"}
    return {_COLUMN_OF[kind]}


@pytest.fixture(scope="module")
def commits_home(tmp_path_factory, sample_parquet):
    """A home holding 200 commits of the sample; the other sample rows are the fuzz material."""
    env = local_env(tmp_path_factory.mktemp("fuzz_ingest") / "home")
    base = tmp_path_factory.mktemp("fuzz_base") / "base.parquet"
    t = pq.read_table(sample_parquet)
    pq.write_table(t.slice(0, 200), base)
    with deployment.exported(env):
        ingest.ingest([base])
    return {"env": env, "material": t.slice(200), "dir": tmp_path_factory.mktemp("fuzz_files")}


_STATS = {"examples": 0, "rejected": 0, "accepted": 0, "corrupt_files": 0, "corrupt_accepted": 0}


@FUZZ
@given(data=st.data())
def test_ingest_fuzz_clear_error_or_documented_handling(commits_home, data):
    material: pa.Table = commits_home["material"]
    start = data.draw(st.integers(0, material.num_rows - 30), label="start")
    rows = data.draw(st.integers(1, 25), label="rows")
    t = material.slice(start, rows)
    drawn = data.draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=0, max_size=2, unique=True),
                      label="mutations")
    kinds, used = [], set()
    for k in drawn:
        i = data.draw(st.integers(0, 1000), label=f"{k} index")
        cols = touched(k, i, t)
        if cols & used:
            continue  # one mutation per column: the expected outcome stays well defined
        used |= cols
        t = mutate(t, k, i)
        kinds.append(k)
    path = Path(commits_home["dir"]) / f"fuzz{_STATS['examples']}.parquet"
    _STATS["examples"] += 1
    checksums = data.draw(st.booleans(), label="page checksums")
    pq.write_table(t, path, write_page_checksum=checksums)
    corrupt = data.draw(st.sampled_from([None, None, None, "truncate", "flip", "garbage"]), label="corrupt")
    if corrupt:
        raw = bytearray(path.read_bytes())
        pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
        if corrupt == "truncate":
            raw = raw[:pos]
        elif corrupt == "flip":
            raw[pos] ^= 0xFF
        else:
            raw = bytearray(data.draw(st.binary(min_size=0, max_size=64), label="garbage"))
        path.write_bytes(bytes(raw))
        _STATS["corrupt_files"] += 1
    expected_errors = [MUTATIONS[k] for k in kinds if MUTATIONS[k] is not None]
    with deployment.exported(commits_home["env"]) as p:
        table = lake.commits_table(p)
        before = lake.snapshot_id(table)
        keys_before = table.scan(selected_fields=("repo", "sha")).to_arrow()
        stored_before = keys_before.num_rows
        stored_keys = set(zip(keys_before["repo"].to_pylist(), keys_before["sha"].to_pylist()))
        try:
            result = ingest.ingest([path])
        except ingest.IngestError as e:
            message = str(e)
            assert str(path) in message, f"the error does not name the file: {message}"
            assert lake.snapshot_id(lake.commits_table(p)) == before, "a rejected ingest changed the table"
            if not corrupt:
                assert expected_errors, f"accepted input {kinds} was rejected: {message}"
                assert any(fragment in message for fragment in expected_errors), \
                    f"{kinds}: error {message!r} names none of {expected_errors}"
            _STATS["rejected"] += 1
            return
        assert not expected_errors, f"{kinds}: bad input was accepted ({result})"
        # Accepted (an undamaged file, or a flipped byte Parquet could not detect): every commit stored once.
        after = lake.commits_table(p).scan().to_arrow()
        keys = list(zip(after["repo"].to_pylist(), after["sha"].to_pylist()))
        assert len(keys) == len(set(keys)), "ingest stored a commit twice"
        assert after.num_rows == stored_before + result.rows_added
        if not corrupt:
            _check_normalized(t, after, stored_keys)
        _STATS["accepted"] += 1
        _STATS["corrupt_accepted"] += bool(corrupt)


def _check_normalized(incoming: pa.Table, stored: pa.Table, stored_before: set) -> None:
    """The new incoming commits are in the table with the values the schema says (UTC µs, int32, strings).

    Commits whose key was stored before are skipped (the key is (repo, sha)): the accepted mutations only change a
    value's representation, so they arrive with the stored values (other values would be refused as a conflict).
    """
    by_key = {(r["repo"], r["sha"]): r for r in stored.to_pylist()}
    for r in incoming.to_pylist():
        key = (str(r["repo"]), str(r["sha"]))
        if key in stored_before:
            continue
        s = by_key[key]
        for name in ("authored_at", "committed_at"):
            v = r[name]
            want = pd.Timestamp(v).tz_convert("UTC") if not isinstance(v, str) else pd.Timestamp(v).tz_convert(
                "UTC")
            assert pd.Timestamp(s[name]) == want.floor("us"), (name, v, s[name])
        for name in ("files_changed", "lines_added", "lines_deleted", "is_merge", "author_id", "languages"):
            assert s[name] == r[name], (name, r[name], s[name])


def test_ingest_fuzz_report():
    """Prints what the fuzz run covered (for RELIABILITY.md); fails if it exercised too little."""
    print(f"RELIABILITY ingest fuzz: {_STATS}")
    if _STATS["examples"]:
        assert _STATS["rejected"] > 0 and _STATS["accepted"] > 0


# --- get_historical_features ----------------------------------------------------------------------------------------

HIST_REPOS = ("encode/httpx", "spf13/cobra", "prometheus/client_python")
HIST_DAY = date(2026, 8, 20)
UNKNOWN = {"repo": "nobody/nothing", "author_id": "a_ffffffffffff"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_parquet):
    """Three repositories built through HIST_DAY and applied; the feature rows for the reference."""
    root = tmp_path_factory.mktemp("fuzz_hist")
    t = pq.read_table(sample_parquet)
    subset = root / "subset.parquet"
    pq.write_table(t.filter(pc.is_in(t["repo"], pa.array(HIST_REPOS))), subset)
    env = local_env(root / "home")
    with deployment.exported(env) as p:
        from skewless.ops import feast_ops

        ingest.ingest([subset])
        features.build(HIST_DAY, p)
        feast_ops.apply(p)
        rows = {ft.name: lake.load_table(ft.identifier, p).scan().to_pandas() for ft in features.TABLES}
        ttls = {fv.name: fv.ttl for fv in feast_ops.feature_store(p).list_feature_views()}
    return {"env": env, "rows": rows, "ttls": ttls}


def _expected(rows: pd.DataFrame, key: str, entity: str, t: pd.Timestamp, ttl: timedelta | None, names):
    """Feast's point-in-time rule at the microsecond grid, directly on the feature table."""
    mine = rows[(rows[key] == entity) & (rows["event_timestamp"] <= t)]
    if mine.empty:
        return [None] * len(names)
    last = mine.sort_values("event_timestamp").iloc[-1]
    if ttl and last["event_timestamp"] + ttl < t.floor("us"):
        return [None] * len(names)
    return [None if pd.isna(last[n]) else last[n] for n in names]


def _same(a, b) -> bool:
    a_null = a is None or a is pd.NA or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or b is pd.NA or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)


def _timestamps(nanoseconds: bool):
    """Entity times around HIST_DAY: whole seconds, day edges, and (if asked) sub-microsecond instants."""
    base = pd.Timestamp(features.day_start(HIST_DAY))
    edges = [pd.Timedelta(0), pd.Timedelta(days=1) - pd.Timedelta(microseconds=1), pd.Timedelta(days=1),
             -pd.Timedelta(microseconds=1), pd.Timedelta(days=-7), pd.Timedelta(days=-400)]
    parts = [st.integers(-40 * 86_400, 3 * 86_400).map(lambda s: pd.Timedelta(seconds=s)), st.sampled_from(edges)]
    if nanoseconds:
        parts += [st.sampled_from([pd.Timedelta(days=1) - pd.Timedelta(nanoseconds=1), -pd.Timedelta(nanoseconds=1)]),
                  st.integers(-40 * 86_400 * 10**9, 3 * 86_400 * 10**9).map(lambda ns: pd.Timedelta(nanoseconds=ns))]
    return st.one_of(*parts).map(lambda off: base + off)


_HIST = {"examples": 0, "answered": 0, "answered_nanoseconds": 0, "refused_nanoseconds": 0, "error": None}
HIST_FUZZ = settings(FUZZ, max_examples=int(os.environ.get("SKEWLESS_HIST_EXAMPLES", "10")))


@HIST_FUZZ
@given(data=st.data())
def test_historical_retrieval_with_awkward_entity_rows(built, data):
    view = data.draw(st.sampled_from([ft.name for ft in features.TABLES]), label="view")
    table = next(ft for ft in features.TABLES if ft.name == view)
    key, names = table.entity_key, [f.name for f in table.features]
    rows = built["rows"][view]
    known = sorted(set(rows[key]))
    entities = st.one_of(st.sampled_from(known), st.just(UNKNOWN[key]))
    nanoseconds = data.draw(st.sampled_from([False, False, True]), label="nanosecond times")
    picks = data.draw(st.lists(st.tuples(entities, _timestamps(nanoseconds)), min_size=1, max_size=12), label="rows")
    if data.draw(st.booleans(), label="duplicate rows"):
        picks = picks + picks[: max(1, len(picks) // 2)]
    tz_mode = data.draw(st.sampled_from(["utc", "naive", "offset"]), label="timezone")
    ts = pd.Series([t for _, t in picks]).dt.tz_convert("UTC")
    if tz_mode == "naive":
        ts = ts.dt.tz_localize(None)
    elif tz_mode == "offset":
        ts = ts.dt.tz_convert("America/Sao_Paulo")
    entity_df = pd.DataFrame({key: [e for e, _ in picks], "event_timestamp": ts})
    sub_us = any(pd.Timestamp(t).value % 1000 for _, t in picks)
    _HIST["examples"] += 1
    with deployment.exported(built["env"]) as p:
        from skewless.ops import feast_ops

        try:
            got = feast_ops.feature_store(p).get_historical_features(
                entity_df=entity_df, features=[f"{view}:{n}" for n in names]).to_df()
        except Exception as e:  # noqa: BLE001 - only a clear refusal of sub-microsecond times is acceptable
            if sub_us and "event_timestamp" in str(e):
                _HIST["refused_nanoseconds"] += 1
                _HIST["error"] = f"{type(e).__name__}: {str(e)[:160]}"
                return
            raise
    _HIST["answered"] += 1
    _HIST["answered_nanoseconds"] += bool(sub_us)
    assert len(got) == len(entity_df), f"{len(entity_df)} entity rows in, {len(got)} rows out"
    got_ts = pd.to_datetime(got["event_timestamp"])
    got_ts = got_ts.dt.tz_localize("UTC") if got_ts.dt.tz is None else got_ts.dt.tz_convert("UTC")
    got_ts = got_ts.dt.as_unit("ns")
    got_keys = sorted(zip(got[key], got_ts.astype("int64")))
    want_keys = sorted((e, pd.Timestamp(t).tz_convert("UTC").value) for e, t in picks)
    # The output keeps the entity timestamp (at least to the microsecond) so rows can be joined back.
    assert [(e, v // 1000) for e, v in got_keys] == [(e, v // 1000) for e, v in want_keys]
    got_rows = sorted(((r[key], got_ts.iloc[i].value // 1000, tuple(r[n] for n in names))
                       for i, r in enumerate(got.to_dict("records"))), key=lambda x: (x[0], x[1]))
    for (e, us, values), (we, t) in zip(got_rows, sorted(picks, key=lambda x: (x[0], x[1].tz_convert("UTC")))):
        want = _expected(rows, key, e, pd.Timestamp(t).tz_convert("UTC"), built["ttls"][view], names)
        for n, a, b in zip(names, values, want):
            assert _same(a, b), f"{view} {e} at {t} ({tz_mode}): {n} = {a}, expected {b}"


def test_historical_fuzz_report():
    """Prints what the historical fuzz covered (for RELIABILITY.md)."""
    print(f"RELIABILITY historical fuzz: {_HIST}")
    if _HIST["examples"]:
        assert _HIST["answered"] > 0
