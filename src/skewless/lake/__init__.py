"""The Iceberg lakehouse: catalog, table schemas and the helpers every stage uses to reach them.

The catalog is a pyiceberg SqlCatalog on SQLite (local profile) or PostgreSQL (production profile), with a file
warehouse inside ``SKEWLESS_HOME``. Resources come from :func:`skewless.core.config.profile` only.
"""

from __future__ import annotations

import logging
from datetime import date, timezone
import random
import time
from typing import TYPE_CHECKING

import pyarrow as pa

from skewless.core.config import COMMITS_TABLE, FEATURES_NAMESPACE, Profile, profile
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

#: Arrow schema of a commit event, as in ``shared/data/commits/README.md``.
COMMITS_ARROW_SCHEMA = pa.schema(
    [
        pa.field("repo", pa.string(), nullable=False),
        pa.field("sha", pa.string(), nullable=False),
        pa.field("author_id", pa.string(), nullable=False),
        pa.field("authored_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("committed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("is_merge", pa.bool_(), nullable=False),
        pa.field("files_changed", pa.int32(), nullable=False),
        pa.field("lines_added", pa.int32(), nullable=False),
        pa.field("lines_deleted", pa.int32(), nullable=False),
        pa.field("languages", pa.list_(pa.field("element", pa.string(), nullable=False)), nullable=False),
    ]
)


class LakeError(SkewlessError, RuntimeError):
    """The lakehouse is missing, unreachable or belongs to another deployment."""


def _ensure_postgres_database(url: str) -> None:
    """Create the production database if the server has none of that name (trust auth on a fresh machine)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if not u.database:
        raise LakeError(f"SKEWLESS_PG_URL={url!r} names no database")
    admin = u.set(database="postgres")
    try:
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": u.database}).scalar()
            if not exists:
                try:
                    conn.execute(sa.text(f'CREATE DATABASE "{u.database}"'))
                except (sa.exc.ProgrammingError, sa.exc.IntegrityError):
                    # Another process created it between the check and the CREATE: that is what we wanted.
                    if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                        {"d": u.database}).scalar():
                        raise
        engine.dispose()
    except sa.exc.OperationalError as e:
        raise LakeError(
            f"PostgreSQL at {u.render_as_string(hide_password=True)} is unreachable ({e.orig}); "
            "start it or set SKEWLESS_PG_URL (see README, production profile)"
        ) from e


def catalog(p: Profile | None = None) -> "SqlCatalog":
    """The profile's Iceberg catalog, created on first use."""
    from pyiceberg.catalog.sql import SqlCatalog

    p = p or profile()
    p.home.mkdir(parents=True, exist_ok=True)
    p.warehouse.mkdir(parents=True, exist_ok=True)
    if p.name == "production":
        _ensure_postgres_database(p.catalog_uri)
    return _first_use_retried(lambda: _open_catalog(SqlCatalog, p))


def _open_catalog(cls: type, p: Profile) -> "SqlCatalog":
    cat = cls(p.catalog_name, **p.catalog_properties())
    for ns in (COMMITS_TABLE.split(".")[0], FEATURES_NAMESPACE):
        cat.create_namespace_if_not_exists(ns)
    return cat


def _first_use_retried(open_it, attempts: int = 8):
    """Open the catalog, retrying the races of a first use by several processes at once.

    On an empty catalog database, pyiceberg creates its tables and skewless its namespaces; two processes doing it
    at the same moment see "table already exists", a unique-key violation or (SQLite) "database is locked". Each is
    harmless once the other process has finished, so the open is retried with a short jittered backoff; any other
    error, or the same one after the last attempt, is raised.
    """
    import sqlalchemy as sa
    from pyiceberg.exceptions import NamespaceAlreadyExistsError

    for attempt in range(attempts):
        try:
            return open_it()
        except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError,
                NamespaceAlreadyExistsError) as e:
            text = str(e).lower()
            transient = isinstance(e, (sa.exc.IntegrityError, NamespaceAlreadyExistsError)) or any(
                m in text for m in ("already exists", "database is locked", "duplicate key", "unique constraint"))
            if not transient or attempt == attempts - 1:
                raise
            log.debug("catalog first use raced another process (%s); retrying", e)
            time.sleep(0.05 * (2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _check_owned(table: "Table", p: Profile) -> None:
    """Refuse a table whose files live outside this home's warehouse (a shared catalog database)."""
    loc = table.location()
    if not loc.startswith(p.warehouse.as_uri()):
        raise LakeError(
            f"the catalog at {p.catalog_uri.split('@')[-1]} holds {'.'.join(table.name())} with its files at {loc}, "
            f"not in this SKEWLESS_HOME ({p.home}); each deployment needs its own catalog database "
            "(set SKEWLESS_PG_URL to another database)"
        )


def load_table(identifier: str, p: Profile | None = None) -> "Table":
    """Load an existing table, with an error that says what to run when it does not exist."""
    from pyiceberg.exceptions import NoSuchTableError

    p = p or profile()
    try:
        t = catalog(p).load_table(identifier)
    except NoSuchTableError as e:
        hint = "skewless ingest" if identifier == COMMITS_TABLE else "skewless features build"
        raise LakeError(f"Iceberg table {identifier} does not exist in {p.home}; run `{hint}` first") from e
    _check_owned(t, p)
    return t


def commits_table(p: Profile | None = None, create: bool = False) -> "Table":
    """The raw commit events table ``abukix.commits``, partitioned by month of ``committed_at``."""
    from pyiceberg.transforms import MonthTransform

    p = p or profile()
    if not create:
        return load_table(COMMITS_TABLE, p)
    return _create_table(COMMITS_TABLE, COMMITS_ARROW_SCHEMA, "committed_at", MonthTransform(), "committed_month", p)


def create_feature_table(name: str, arrow_schema: pa.Schema, p: Profile | None = None) -> "Table":
    """Create (if needed) the Iceberg table ``features.<name>``, partitioned by year of ``event_timestamp``."""
    from pyiceberg.transforms import YearTransform

    return _create_table(f"{FEATURES_NAMESPACE}.{name}", arrow_schema, "event_timestamp", YearTransform(),
                         "event_year", p or profile())


def _create_table(ident: str, arrow_schema: pa.Schema, ts_column: str, transform, part_name: str,
                  p: Profile) -> "Table":
    """Create a table and its partition spec in one catalog transaction (or load it if it exists)."""
    cat = catalog(p)
    if not cat.table_exists(ident):
        log.info("creating %s", ident)
        tx = cat.create_table_transaction(
            ident, schema=arrow_schema, properties={"write.parquet.compression-codec": "zstd"}
        )
        with tx.update_spec() as spec:
            spec.add_field(ts_column, transform, part_name)
        try:
            tx.commit_transaction()
        except Exception:  # a concurrent creator won: use its table
            if not cat.table_exists(ident):
                raise
    t = cat.load_table(ident)
    _check_owned(t, p)
    return t


def snapshot_id(table: "Table") -> int | None:
    snap = table.current_snapshot()
    return snap.snapshot_id if snap else None


def newest_commit_day(p: Profile | None = None) -> "date":
    """The UTC day of the newest commit in ``abukix.commits`` (the default last day of builds and loads)."""
    import pyarrow.compute as pc

    col = commits_table(p or profile()).scan(selected_fields=("committed_at",)).to_arrow()["committed_at"]
    if len(col) == 0:
        raise LakeError(f"{COMMITS_TABLE} is empty; run `skewless ingest` first")
    return pc.max(col).as_py().astimezone(timezone.utc).date()
