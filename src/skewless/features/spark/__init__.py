"""The Spark engine: one Spark session over the profile's Iceberg catalog (ADR 0008).

Spark sees the SAME catalog database that pyiceberg uses (SQLite file locally, PostgreSQL in production) through
Iceberg's ``JdbcCatalog``, registered in Spark as the catalog ``skewless`` (``Profile.catalog_name``), so the
tables are ``skewless.abukix.commits``, ``skewless.features.repo_activity``, ``skewless.features.author_activity``.
pyiceberg's ``SqlCatalog`` tables (``iceberg_tables`` with ``iceberg_type``, ``iceberg_namespace_properties``) are
Iceberg's JDBC catalog schema V1, so both libraries read and commit each other's tables.

Needs (``make tools`` installs the Debian ones): Java 17, pyspark 3.5.9 and the Iceberg runtime jar for Spark 3.5 /
Scala 2.12 from the ``snowpark-connect-deps-iceberg`` package (both in the ``spark`` dependency group), and the JDBC
driver jar of the catalog database from ``libxerial-sqlite-jdbc-java`` / ``libpostgresql-jdbc-java``.
:func:`missing` says what is absent; :func:`session` raises :class:`SparkUnavailable` with the same message.

Nothing here runs on import: pyspark is imported, and the JVM started, by :func:`session`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from skewless.core.config import Profile, ProfileError, profile

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Where Debian's JDBC driver packages put their jars.
JDBC_JAR_DIR = Path("/usr/share/java")
JDBC_DRIVERS = {  # catalog URI scheme -> (jar, Debian package)
    "sqlite": ("sqlite-jdbc.jar", "libxerial-sqlite-jdbc-java"),
    "postgresql": ("postgresql.jar", "libpostgresql-jdbc-java"),
}
ICEBERG_RUNTIME = "iceberg-spark-runtime-3.5_2.12-"
ICEBERG_JARS_PACKAGE = "snowpark_connect_deps_iceberg"
LOCAL_SHUFFLE_PARTITIONS = 8
#: Settings every skewless Spark session has: exact UTC day arithmetic and Arrow transfers to and from Python.
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # The driver and executors are the same JVM in local mode: don't let it pick a routable interface.
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


class SparkUnavailable(ProfileError):
    """The profile selects the Spark engine but this machine lacks Java, pyspark or a jar it needs."""


def _scheme(p: Profile) -> str:
    return "postgresql" if p.catalog_uri.startswith("postgresql") else "sqlite"


def iceberg_runtime_jar() -> Path | None:
    """The Iceberg Spark runtime jar (Spark 3.5, Scala 2.12) inside the installed ``snowpark-connect-deps-iceberg``."""
    spec = importlib.util.find_spec(ICEBERG_JARS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    jars = sorted(Path(next(iter(spec.submodule_search_locations)), "jars").glob(f"{ICEBERG_RUNTIME}*.jar"))
    return jars[-1] if jars else None


def jdbc_driver_jar(p: Profile) -> Path:
    """The JDBC driver jar of the profile's catalog database (it may not exist: see :func:`missing`)."""
    return JDBC_JAR_DIR / JDBC_DRIVERS[_scheme(p)][0]


def missing(p: Profile | None = None) -> str | None:
    """What the Spark engine lacks on this machine for profile ``p`` (None: nothing)."""
    p = p or profile()
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: install the `spark` dependency group (`make setup`)"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "no Java runtime (java not on PATH and JAVA_HOME unset): install a JDK 17"
    if iceberg_runtime_jar() is None:
        return (f"no {ICEBERG_RUNTIME}*.jar: install snowpark-connect-deps-iceberg==1.0.2 "
                "(the `spark` dependency group, `make setup`)")
    jar = jdbc_driver_jar(p)
    if not jar.exists():
        return f"no JDBC driver {jar}: install the Debian package {JDBC_DRIVERS[_scheme(p)][1]} (`make tools`)"
    return None


def jdbc_catalog_properties(p: Profile) -> dict[str, str]:
    """Iceberg JdbcCatalog properties for the profile's catalog database (the SQLAlchemy URL as a JDBC URL)."""
    from sqlalchemy.engine import make_url

    url = make_url(p.catalog_uri)
    props = {"catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog", "warehouse": p.warehouse.as_uri(),
             "jdbc.schema-version": "V1",
             # pyiceberg (lake.catalog) creates the catalog tables. Iceberg 1.10's check for them leaves a JDBC
             # ResultSet open on a pooled connection: on SQLite that is a read lock held for the session's
             # lifetime, and every later pyiceberg commit fails with "database is locked".
             "jdbc.init-catalog-tables": "false"}
    if url.get_backend_name() == "sqlite":
        if not url.database:
            raise ProfileError(f"catalog URI {p.catalog_uri!r} names no SQLite file")
        props["uri"] = f"jdbc:sqlite:{Path(url.database).resolve()}"
    elif url.get_backend_name() == "postgresql":
        host = f"{url.host or '127.0.0.1'}:{url.port or 5432}"
        props["uri"] = f"jdbc:postgresql://{host}/{url.database}"
        if url.username:
            props["jdbc.user"] = url.username
        if url.password:
            props["jdbc.password"] = str(url.password)
    else:
        raise ProfileError(f"catalog URI {p.catalog_uri!r}: Spark's Iceberg JDBC catalog here supports "
                           "sqlite and postgresql only")
    return props


def session_conf(p: Profile) -> dict[str, str]:
    """Every Spark setting a skewless session needs for profile ``p`` (jars, catalog, UTC, Arrow)."""
    reason = missing(p)
    if reason:
        raise SparkUnavailable(f"the Spark engine cannot start: {reason}")
    cat = f"spark.sql.catalog.{p.catalog_name}"
    conf = {
        **BASE_CONF,
        "spark.jars": ",".join(str(j) for j in (iceberg_runtime_jar(), jdbc_driver_jar(p))),
        cat: "org.apache.iceberg.spark.SparkCatalog",
        # pyiceberg commits to the same tables between Spark reads: never serve a cached table version.
        f"{cat}.cache-enabled": "false",
    }
    conf.update({f"{cat}.{k}": v for k, v in jdbc_catalog_properties(p).items()})
    return conf


def session(p: Profile | None = None, conf: Mapping[str, str] | None = None) -> "SparkSession":
    """The Spark session of profile ``p`` (created on first use; ``conf`` overlays settings such as memory).

    One JVM serves one catalog: asking for a session of a profile whose catalog differs from the running
    session's raises :class:`SparkUnavailable` (call :func:`stop` first).
    """
    from pyspark.sql import SparkSession

    p = p or profile()
    wanted = {**session_conf(p), **(conf or {})}
    active = SparkSession.getActiveSession()
    if active is not None:
        key = f"spark.sql.catalog.{p.catalog_name}.uri"
        current = active.conf.get(key, None)
        if current != wanted[key]:
            raise SparkUnavailable(f"a Spark session for catalog {current} is running in this process; "
                                   f"stop it (skewless.features.spark.stop()) before using {wanted[key]}")
        return active
    if p.spark_master.startswith("local"):
        # Spark's default of 200 shuffle partitions is sized for clusters; on one machine it is mostly overhead.
        wanted = {"spark.sql.shuffle.partitions": str(LOCAL_SHUFFLE_PARTITIONS), **wanted}
    builder = SparkSession.builder.master(p.spark_master).appName(f"skewless-{p.name}")
    for k, v in wanted.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def stop() -> None:
    """Stop this process's Spark session, if any (its JVM stays up for the next :func:`session`)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
