"""The one place that decides which profile skewless runs in.

Every component (ingest, build, Feast plugins, training, serving, DAGs) asks :func:`profile` for its resources;
nothing else reads ``SKEWLESS_ENV`` or hard-codes a path or a connection string.

Profiles
--------
``local`` (default)
    Iceberg SqlCatalog on SQLite, file warehouse, Feast file registry, SQLite online store: no server at all.
    Feast reads ``feature_repo/feature_store.yaml``.
``production``
    Iceberg SqlCatalog on PostgreSQL, Feast SQL registry on PostgreSQL, Redis online store.
    Feast reads ``feature_repo/feature_store.production.yaml``.

Environment variables (all optional)
------------------------------------
``SKEWLESS_ENV``       ``local`` | ``production`` (default ``local``).
``SKEWLESS_HOME``      every piece of local state: warehouse, catalog, registry, online DB, MLflow
                       (default ``~/.skewless``). Two homes never share state.
``SKEWLESS_PG_URL``    production only: SQLAlchemy URL of the PostgreSQL database holding the Iceberg catalog and
                       the Feast registry (default ``postgresql+psycopg://postgres@127.0.0.1:5432/skewless``).
``SKEWLESS_REDIS``     production only: the Redis online store (default ``127.0.0.1:6379,db=0``). One Redis:
                       Feast's connection string ``host:port[,key=value...]``; a Redis Cluster:
                       ``redis_cluster://host1:port1,host2:port2[,...][,key=value...]`` (any reachable masters; the
                       rest are discovered). See :func:`parse_redis`. ``skewless env`` derives Feast's ``redis_type``
                       and connection string from it (``SKEWLESS_REDIS_TYPE``, ``SKEWLESS_REDIS_CONNECTION``, read
                       by the production yaml, never by skewless).
``SKEWLESS_SOURCES``   commit sources the daily DAG ingests: Parquet files or local git repositories, separated by
                       ``os.pathsep`` (default: ``../shared/data/commits/commits.parquet`` beside the project when it
                       exists, else the shipped sample); see :func:`commit_sources`.
``DATAHUB_GMS_URL``    DataHub server (GMS) that ``skewless lineage`` emits to (unset: a file in SKEWLESS_HOME/lineage);
                       ``DATAHUB_GMS_TOKEN`` its access token, if it needs one; see :func:`datahub_gms`.
``SKEWLESS_ENGINE``    ``duckdb`` | ``spark`` (default ``duckdb``): the engine that builds the feature tables and
                       that Feast's offline store runs on. ``spark`` reads ``feature_store.spark.yaml`` (local) or
                       ``feature_store.production.spark.yaml``: same definitions, same Iceberg tables (ADR 0008).
``SKEWLESS_SPARK_MASTER``  Spark master of the ``spark`` engine (default ``local[*]``).
``SKEWLESS_NATS``      production only: the NATS server (JetStream) holding pushed commit events (default
                       ``nats://127.0.0.1:4222``); the local profile keeps them in a SQLite log in SKEWLESS_HOME.
``SKEWLESS_STREAM``    name of the commit-event stream (JetStream stream / local log; default ``SKEWLESS_COMMITS``).
``SKEWLESS_STREAM_ACK_WAIT``  seconds JetStream waits for an acknowledgement before redelivering (default 30): how
                       soon a restarted processor gets the events a killed one held.
``SKEWLESS_WEBHOOK_SECRET``  the push webhook's shared secret: every request must carry ``X-Hub-Signature-256``
                       (HMAC-SHA256 of the body, as GitHub sends it); see :func:`webhook_secret`.
``SKEWLESS_SERVING_SKEW``  DRILL ONLY, unset in normal operation: injects a serving-side skew into the online read
                       path (``window_edge`` | ``timezone[:<UTC offset hours>]``); see :mod:`skewless.drills.skew`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from skewless.core.errors import SkewlessError
from skewless.data import SAMPLE_COMMITS

PROFILES = ("local", "production")
ENGINES = ("duckdb", "spark")
DEFAULT_SPARK_MASTER = "local[*]"
DEFAULT_HOME = "~/.skewless"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/skewless"
DEFAULT_REDIS = "127.0.0.1:6379,db=0"
DEFAULT_NATS = "nats://127.0.0.1:4222"
#: The JetStream stream of commit events (production) and the local log's name; SKEWLESS_STREAM overrides it.
DEFAULT_STREAM = "SKEWLESS_COMMITS"
#: Seconds JetStream waits for the processor's acknowledgement before it delivers an event again.
DEFAULT_STREAM_ACK_WAIT = 30.0

#: The project root (``feature_repo/`` lives here). Computed, not read from the working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[3]
FEATURE_REPO = PROJECT_ROOT / "feature_repo"

#: Iceberg identifiers.
COMMITS_TABLE = "abukix.commits"
#: Rows that ``skewless ingest --skip-invalid`` set aside: the row, its source, the rule it broke and when.
QUARANTINE_TABLE = "abukix.commits_quarantine"
#: Every commit event the stream processor applied, with the instant it became known (ADR 0016).
COMMIT_EVENTS_TABLE = "abukix.commit_events"
FEATURES_NAMESPACE = "features"

#: Tag of an MLflow run / registered model version naming the Feast feature service it was trained on: training
#: sets it, the predictor fetches that service, lineage and the feature guard read it. One definition.
FEATURE_SERVICE_TAG = "feature_service"
#: Tag of an MLflow run / registered model version holding the exact feature list it was trained on: JSON object
#: Feast reference ``view:feature`` -> Feast type, in the service's order (ADR 0020). Training sets it; the feature
#: guard and the predictor check the definitions against it (:func:`skewless.core.mlflow_home.recorded_features`).
FEATURES_TAG = "features"
#: The next-week-commits model (its MLflow registered name) and the Feast feature service, the versioned contract,
#: it is trained and served with. Declared once: feature_repo/feature_services.py, training, serving, the drills,
#: the demo and the benchmarks read them from here (the lightest layer, so the CLI's defaults cost no import).
NEXT_WEEK_COMMITS_MODEL = "next_week_commits"
#: The service `skewless train` (and the weekly DAG) trains on unless told otherwise (`--service NAME`).
NEXT_WEEK_COMMITS_SERVICE = "next_week_commits_v1"
#: The service of the fresh (live) features, apart from the daily contract (ADR 0016).
NEXT_WEEK_COMMITS_LIVE_SERVICE = "next_week_commits_live_v1"


class ProfileError(SkewlessError, ValueError):
    """The environment names a profile or a setting that skewless cannot use."""


#: ``SKEWLESS_REDIS`` prefix selecting a Redis Cluster (Feast's ``redis_type: redis_cluster``).
REDIS_CLUSTER_SCHEME = "redis_cluster://"


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``SKEWLESS_REDIS``: Feast's ``redis_type`` and the parts of its connection string."""

    redis_type: str  # "redis" | "redis_cluster" (Feast's RedisType values)
    nodes: tuple[tuple[str, int], ...]
    params: tuple[str, ...]  # "key=value" items, passed by Feast to redis-py

    @property
    def connection_string(self) -> str:
        """Feast's ``connection_string`` (``host:port,...,key=value,...``)."""
        return ",".join([f"{h}:{p}" for h, p in self.nodes] + list(self.params))

    @property
    def cluster(self) -> bool:
        return self.redis_type == "redis_cluster"


def parse_redis(value: str) -> RedisTarget:
    """Parse a ``SKEWLESS_REDIS`` value; :class:`ProfileError` naming what is wrong with it.

    * one Redis: ``host:port[,key=value...]`` (Feast's connection string, e.g. ``127.0.0.1:6379,db=0``);
    * a Redis Cluster: ``redis_cluster://host1:port1[,host2:port2...][,key=value...]``: startup nodes (any
      reachable ones suffice, redis-py discovers the others) and redis-py options; a cluster has only database 0.
    """
    raw = value.strip()
    redis_type = "redis"
    body = raw
    if "://" in raw:
        scheme = raw.split("://", 1)[0] + "://"
        if scheme != REDIS_CLUSTER_SCHEME:
            raise ProfileError(
                f"SKEWLESS_REDIS={value!r}: {scheme!r} is not understood; use host:port[,key=value...] for one "
                f"Redis or {REDIS_CLUSTER_SCHEME}host1:port1,host2:port2[,key=value...] for a Redis Cluster")
        redis_type, body = "redis_cluster", raw[len(REDIS_CLUSTER_SCHEME):]
    if not body.strip():
        raise ProfileError(f"SKEWLESS_REDIS={value!r} names no host:port")
    nodes: list[tuple[str, int]] = []
    params: list[str] = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            raise ProfileError(f"SKEWLESS_REDIS={value!r} has an empty item (two commas, or a comma at an end)")
        if "=" in item:
            key = item.split("=", 1)[0].strip()
            if not key:
                raise ProfileError(f"SKEWLESS_REDIS={value!r}: option {item!r} has no name (key=value)")
            params.append(item)
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or ":" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ProfileError(f"SKEWLESS_REDIS={value!r}: {item!r} is not host:port (a port from 1 to 65535) "
                               "nor a key=value option")
        nodes.append((host, int(port)))
    if not nodes:
        raise ProfileError(f"SKEWLESS_REDIS={value!r} names no host:port")
    if redis_type == "redis" and len(nodes) > 1:
        listed = ",".join(f"{h}:{p}" for h, p in nodes)
        raise ProfileError(f"SKEWLESS_REDIS={value!r} names {len(nodes)} servers; one Redis takes one host:port "
                           f"(for a Redis Cluster write {REDIS_CLUSTER_SCHEME}{listed})")
    if redis_type == "redis_cluster":
        for item in params:
            k, v = (s.strip() for s in item.split("=", 1))
            if k == "db" and v != "0":
                raise ProfileError(f"SKEWLESS_REDIS={value!r}: a Redis Cluster has only database 0, not db={v}")
    return RedisTarget(redis_type, tuple(nodes), tuple(params))


@dataclass(frozen=True)
class Profile:
    """Resolved resources of one profile. Build it with :func:`profile`, never by hand."""

    name: str
    home: Path
    pg_url: str | None = None
    redis: str | None = None
    catalog_name: str = "skewless"
    extra: Mapping[str, str] = field(default_factory=dict)
    engine: str = "duckdb"
    spark_master: str = DEFAULT_SPARK_MASTER
    nats_url: str | None = None
    stream: str = DEFAULT_STREAM
    stream_ack_wait: float = DEFAULT_STREAM_ACK_WAIT

    # --- commit events (the fresh path, ADR 0015) ------------------------------------------------------------
    @property
    def event_broker(self) -> str:
        """Where pushed commit events wait for the stream processor: ``nats`` (JetStream, production) or
        ``sqlite`` (an append-only log file inside ``SKEWLESS_HOME``, local)."""
        return "nats" if self.name == "production" else "sqlite"

    @property
    def event_log_path(self) -> Path:
        """The local profile's event log (SQLite, append-only)."""
        return self.home / "events" / f"{self.stream}.sqlite"

    # --- lakehouse -------------------------------------------------------------------------------------------
    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def catalog_uri(self) -> str:
        if self.name == "production":
            assert self.pg_url is not None
            return self.pg_url
        return f"sqlite:///{self.home / 'catalog.db'}"

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg SqlCatalog properties (also stored in the Feast IcebergSource definitions)."""
        return {"uri": self.catalog_uri, "warehouse": self.warehouse.as_uri()}

    # --- Feast -----------------------------------------------------------------------------------------------
    @property
    def feature_store_yaml(self) -> Path:
        name = "feature_store.yaml" if self.name == "local" else f"feature_store.{self.name}.yaml"
        if self.engine != "duckdb":
            name = name.replace(".yaml", f".{self.engine}.yaml")
        return FEATURE_REPO / name

    def feast_env(self) -> dict[str, str]:
        """Environment that makes plain Feast (``feast`` CLI, ``FeatureStore(repo_path=...)``) see this profile."""
        env = {
            "SKEWLESS_ENV": self.name,
            "SKEWLESS_HOME": str(self.home),
            "FEAST_FS_YAML_FILE_PATH": str(self.feature_store_yaml),
            "SKEWLESS_ENGINE": self.engine,
            "SKEWLESS_STREAM": self.stream,
            "SKEWLESS_STREAM_ACK_WAIT": f"{self.stream_ack_wait:g}",
        }
        if self.engine == "spark":
            env["SKEWLESS_SPARK_MASTER"] = self.spark_master
        if self.name == "production":
            env["SKEWLESS_PG_URL"] = self.pg_url or ""
            env["SKEWLESS_REDIS"] = self.redis or ""
            env["SKEWLESS_NATS"] = self.nats_url or ""
            target = self.redis_target
            # What the production yaml reads (Feast's redis_type and connection_string), derived, never read back.
            env["SKEWLESS_REDIS_TYPE"] = target.redis_type if target else "redis"
            env["SKEWLESS_REDIS_CONNECTION"] = target.connection_string if target else ""
        return env

    @property
    def redis_target(self) -> RedisTarget | None:
        """The parsed ``SKEWLESS_REDIS`` of the production profile (None in local)."""
        return parse_redis(self.redis) if self.redis else None

    # --- MLflow ----------------------------------------------------------------------------------------------
    @property
    def mlflow_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"


def profile(environ: Mapping[str, str] | None = None) -> Profile:
    """Decide the profile from the environment. This is the only function that reads ``SKEWLESS_ENV``."""
    env = os.environ if environ is None else environ
    name = (env.get("SKEWLESS_ENV") or "local").strip().lower()
    if name not in PROFILES:
        raise ProfileError(f"SKEWLESS_ENV={name!r} is not a profile; choose one of {', '.join(PROFILES)}")
    raw_home = env.get("SKEWLESS_HOME") or DEFAULT_HOME
    home = Path(os.path.expanduser(raw_home)).resolve()
    engine = (env.get("SKEWLESS_ENGINE") or "duckdb").strip().lower()
    if engine not in ENGINES:
        raise ProfileError(f"SKEWLESS_ENGINE={engine!r} is not an engine; choose one of {', '.join(ENGINES)}")
    compute = {"engine": engine, "spark_master": env.get("SKEWLESS_SPARK_MASTER") or DEFAULT_SPARK_MASTER}
    stream = (env.get("SKEWLESS_STREAM") or DEFAULT_STREAM).strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", stream):
        raise ProfileError(f"SKEWLESS_STREAM={stream!r} is not a stream name: use letters, digits, '_' and '-'")
    compute["stream"] = stream
    raw_wait = (env.get("SKEWLESS_STREAM_ACK_WAIT") or "").strip()
    try:
        compute["stream_ack_wait"] = float(raw_wait) if raw_wait else DEFAULT_STREAM_ACK_WAIT
    except ValueError:
        raise ProfileError(f"SKEWLESS_STREAM_ACK_WAIT={raw_wait!r} is not a number of seconds") from None
    if not 0.5 <= compute["stream_ack_wait"] <= 3600:
        raise ProfileError(f"SKEWLESS_STREAM_ACK_WAIT={raw_wait!r}: give between 0.5 and 3600 seconds")
    if name == "production":
        redis = (env.get("SKEWLESS_REDIS") or "").strip() or DEFAULT_REDIS
        parse_redis(redis)  # a malformed value fails here, naming the problem, not deep inside Feast or redis-py
        return Profile(
            name=name,
            home=home,
            pg_url=env.get("SKEWLESS_PG_URL") or DEFAULT_PG_URL,
            redis=redis,
            nats_url=(env.get("SKEWLESS_NATS") or "").strip() or DEFAULT_NATS,
            **compute,
        )
    return Profile(name=name, home=home, **compute)


#: Default commit sources: the shared data set beside the project, else the sample shipped in the package.
SHARED_COMMITS = PROJECT_ROOT.parent / "shared" / "data" / "commits" / "commits.parquet"


def commit_sources(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The commit sources of scheduled ingestion (``SKEWLESS_SOURCES``); the only reader of that variable.

    Unset or empty: the shared data set when present, else the shipped sample. Paths are not checked here; the
    ingest stage names any source it cannot read.
    """
    env = os.environ if environ is None else environ
    raw = (env.get("SKEWLESS_SOURCES") or "").strip()
    if not raw:
        return [SHARED_COMMITS if SHARED_COMMITS.exists() else SAMPLE_COMMITS]
    return [Path(os.path.expanduser(s.strip())) for s in raw.split(os.pathsep) if s.strip()]


def datahub_gms(environ: Mapping[str, str] | None = None) -> tuple[str, str | None] | None:
    """The DataHub server lineage goes to: (``DATAHUB_GMS_URL``, ``DATAHUB_GMS_TOKEN`` or None), None when no URL
    is set. The only reader of those variables.
    """
    env = os.environ if environ is None else environ
    url = (env.get("DATAHUB_GMS_URL") or "").strip().rstrip("/")
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ProfileError(f"DATAHUB_GMS_URL={url!r} is not an http(s) URL of DataHub GMS (e.g. http://localhost:8080)")
    return url, (env.get("DATAHUB_GMS_TOKEN") or "").strip() or None


def webhook_secret(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The shared secret of the push webhook (``SKEWLESS_WEBHOOK_SECRET``; GitHub's webhook "secret"), None when
    unset: then the webhook takes unsigned requests and must only listen on loopback. The only reader of it."""
    env = os.environ if environ is None else environ
    secret = env.get("SKEWLESS_WEBHOOK_SECRET") or ""
    return secret.encode() if secret else None


def serving_skew(environ: Mapping[str, str] | None = None) -> str | None:
    """The serving-skew drill switch ``SKEWLESS_SERVING_SKEW`` (None when unset or empty: no skew).

    The only reader of that variable; :func:`skewless.ops.online.parse` validates the value.
    """
    env = os.environ if environ is None else environ
    return (env.get("SKEWLESS_SERVING_SKEW") or "").strip() or None


def activate(p: Profile | None = None) -> Profile:
    """Export the profile's Feast environment into this process (called by the CLI and helpers, never on import)."""
    p = p or profile()
    p.home.mkdir(parents=True, exist_ok=True)
    os.environ.update(p.feast_env())
    return p
