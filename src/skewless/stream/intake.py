"""The intake of the fresh path: commit events from a source, validated by ``skewless ingest``'s rules, stamped
with their arrival time and appended to the event log (ADR 0015).

Sources (``skewless events push SOURCE...``):

* a Parquet file or a JSONL file (one commit per line) in the ``commits.parquet`` columns; an optional ``kind``
  column (``add`` | ``retract``) sends retractions (a retraction needs only ``repo`` and ``sha``);
* a local git repository: the commits reachable from its default branch (or ``--ref``) that the lake does not hold
  yet, and a retraction for every stored commit of that repository no longer reachable (force-push, rebase,
  amend) — the rules of ``skewless ingest`` for a git source, sent as events;
* a push webhook body (:mod:`skewless.stream.webhook`): GitHub's push payload or skewless's own ``{"commits": [...]}``.

Every row is checked with :func:`skewless.lake.ingest.normalize`, so a bad event is refused with the message
``skewless ingest`` gives, and nothing of that call is sent. Accepted events get an ``event_id`` (the log's
dedupe key for a retried publish), ``arrived_at`` (the serving clock, :mod:`skewless.feast_ext.clock`) and
``source``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from skewless import lake
from skewless.core.config import Profile, profile
from skewless.core.days import epoch_us
from skewless.feast_ext.clock import serving_now
from skewless.lake.ingest import IngestError, check_repo_name, normalize, read_source, refuse_unrelated, unreachable
from skewless.stream import open_log
from skewless.stream.log import EventLog

KINDS = ("add", "retract")


@dataclass(frozen=True)
class Pushed:
    source: str
    adds: int
    retracts: int
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.source}: sent {self.adds} commit(s) and {self.retracts} retraction(s)"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _events(rows: pa.Table, kind: str, source: str, arrived_us: int) -> list[dict[str, Any]]:
    out = []
    for row in rows.to_pylist():
        for c in ("authored_at", "committed_at"):
            if isinstance(row.get(c), datetime):
                row[c] = epoch_us(row[c])
        row.update(event_id=uuid.uuid4().hex, kind=kind, arrived_at=arrived_us, source=source)
        out.append(row)
    return out


def _retractions(keys: Sequence[tuple[str, str]], source: str, arrived_us: int) -> list[dict[str, Any]]:
    return [{"event_id": uuid.uuid4().hex, "kind": "retract", "repo": r, "sha": s, "arrived_at": arrived_us,
             "source": source} for r, s in keys]


def events_of_table(table: pa.Table, source: str) -> list[dict[str, Any]]:
    """Events from rows in the commit columns (+ optional ``kind``), validated; raises IngestError."""
    kinds = ["add"] * table.num_rows
    if "kind" in table.column_names:
        kinds = table.column("kind").to_pylist()
        _check_kinds(kinds, source)
        table = table.drop_columns(["kind"])
    arrived = epoch_us(serving_now())
    adds = table.filter(pa.array([k == "add" for k in kinds]))
    events = []
    if adds.num_rows:
        rows, _, _ = normalize(adds, source)
        events += _events(rows, "add", source, arrived)
    retracts = table.filter(pa.array([k == "retract" for k in kinds]))
    if retracts.num_rows:
        keys = []
        for i, (r, s) in enumerate(zip(retracts.column("repo").to_pylist(), retracts.column("sha").to_pylist())):
            if not r or not s:
                raise IngestError(f"{source}: retraction {i} needs repo and sha; rule retract-names-a-commit; "
                                  "nothing was sent")
            check_repo_name(r)
            keys.append((r, s))
        events += _retractions(keys, source, arrived)
    return events


def _check_kinds(kinds: list[Any], source: str) -> None:
    bad = next((i for i, k in enumerate(kinds) if k not in KINDS), None)
    if bad is not None:
        raise IngestError(f"{source}: row {bad}: kind {kinds[bad]!r} is not one of {', '.join(KINDS)}; "
                          "rule known-kind; nothing was sent")


def _read_jsonl(path: Path) -> pa.Table:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IngestError(f"{path}: not a readable JSONL file ({e})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise IngestError(f"{path}: line {n} is not JSON ({e.msg}); nothing was sent") from None
        if not isinstance(row, dict):
            raise IngestError(f"{path}: line {n} is not a JSON object; nothing was sent")
        rows.append(row)
    return table_of_rows(rows, str(path))


def table_of_rows(rows: list[dict[str, Any]], source: str) -> pa.Table:
    """JSON objects (commit columns, timestamps as ISO strings with an offset) as an Arrow table for
    :func:`events_of_table`; a retraction needs only repo and sha."""
    if not rows:
        raise IngestError(f"{source}: no commit events")
    names = [f.name for f in lake.COMMITS_ARROW_SCHEMA]
    has_kind = any("kind" in r for r in rows)
    _check_kinds([r.get("kind", "add") for r in rows], source)
    retract = [r.get("kind") == "retract" for r in rows]
    if not all(retract):
        present = set().union(*(r.keys() for r, x in zip(rows, retract) if not x))
        missing = [c for c in names if c not in present]
        if missing:
            raise IngestError(f"{source}: missing column(s) {', '.join(missing)}")
    try:
        cols = {}
        for f in lake.COMMITS_ARROW_SCHEMA:
            values = [r.get(f.name) for r in rows]
            typ = pa.string() if pa.types.is_timestamp(f.type) else f.type
            cols[f.name] = pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
        raise IngestError(f"{source}: column {f.name} has a value of the wrong type ({e})") from None
    table = pa.table(cols)
    if has_kind:
        table = table.append_column("kind", pa.array([r.get("kind", "add") for r in rows], pa.string()))
    return table


def events_of_source(path: Path, name: str | None = None, ref: str | None = None,
                     p: Profile | None = None) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The events a source sends (see the module docstring) and notes; raises IngestError."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        read = read_source(path, name=name, ref=ref)
        hist = read.git
        assert hist is not None
        stored = _stored_shas(hist.name, p or profile())
        refuse_unrelated(read, stored, hint="or `skewless ingest --replace` it if this IS that repository with its "
                                            "whole history rewritten")
        new = read.rows.filter(pa.array([s not in stored for s in read.rows.column("sha").to_pylist()]))
        gone = sorted(unreachable(read, stored))
        arrived = epoch_us(serving_now())
        events = _events(new, "add", source, arrived) + _retractions([(hist.name, s) for s in gone], source, arrived)
        return events, tuple(read.notes)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        if name is not None or ref is not None:
            raise IngestError(f"{source}: --name and --ref apply to a git repository")
        return events_of_table(_read_jsonl(path), source), ()
    read = read_source(path, name=name, ref=ref)  # Parquet: ingest's reading, checks and messages
    return _events(read.rows, "add", source, epoch_us(serving_now())), tuple(read.notes)


def _stored_shas(repo: str, p: Profile) -> dict[str, datetime]:
    """sha -> committed_at of the commits of ``repo`` the lake holds (what was sent and applied before)."""
    from pyiceberg.expressions import EqualTo

    if not lake.catalog(p).table_exists(lake.COMMITS_TABLE):
        return {}
    t = lake.commits_table(p)
    if t.current_snapshot() is None:
        return {}
    rows = t.scan(row_filter=EqualTo("repo", repo), selected_fields=("sha", "committed_at")).to_arrow()
    return dict(zip(rows.column("sha").to_pylist(), rows.column("committed_at").to_pylist()))


def publish(events: list[dict[str, Any]], log: EventLog | None = None, p: Profile | None = None) -> None:
    """Append events to the profile's log (durable on return)."""
    if not events:
        return
    if log is not None:
        log.publish(events)
        return
    with open_log(p or profile()) as owned:
        owned.publish(events)


def push(sources: Sequence[Path | str], name: str | None = None, ref: str | None = None,
         log: EventLog | None = None) -> list[Pushed]:
    """``skewless events push``: read and check every source first, then send all their events (all or nothing)."""
    if not sources:
        raise IngestError("no source given")
    if (name is not None or ref is not None) and len(sources) != 1:
        raise IngestError("--name and --ref apply to exactly one git repository; push the others separately")
    p = profile()
    read = [(str(s), *events_of_source(Path(s), name, ref, p)) for s in sources]
    publish([e for _, events, _ in read for e in events], log, p)
    return [Pushed(s, sum(e["kind"] == "add" for e in events), sum(e["kind"] == "retract" for e in events), notes)
            for s, events, notes in read]
