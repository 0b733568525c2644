"""Lineage in DataHub: commits → feature tables → Feast feature views → feature services → registered models.

DataHub's own Feast source maps an ``IcebergSource`` to the platform ``unknown`` and ignores feature services, so
skewless emits the metadata itself with the DataHub SDK, using the URNs DataHub's Feast and MLflow sources use (so
the entities merge if those sources run too):

=====================================  ===============================================================================
Iceberg tables (platform ``iceberg``)  ``dataset`` ``abukix.commits``, ``features.repo_activity``, ... with the schema
                                       fields of the pyiceberg schema; a feature table's ``upstreamLineage`` names
                                       ``abukix.commits`` (``skewless features build`` reads nothing else) and the
                                       commits snapshot it was built from.
Feast entities                         ``mlPrimaryKey`` ``(skewless.<view>,<entity>)``, sourced from the view's table.
Feast feature views                    ``mlFeatureTable`` ``(feast, skewless.<view>)`` containing ``mlFeature``
                                       ``(skewless.<view>,<feature>)`` whose ``sources`` are the Iceberg table
                                       (DataHub lineage ``DerivedFrom``).
Feast feature services                 ``mlFeatureTable`` ``(feast, skewless.<service>)``, sub-type "Feature Service",
                                       containing the very ``mlFeature`` URNs of its views' features it selects.
MLflow registered models               ``mlModelGroup`` ``(mlflow, <name>)``; each version an ``mlModel``
                                       ``(mlflow, <name>_<version>)`` (DataHub's MLflow source naming) whose
                                       ``mlFeatures`` are the features of the service named by its
                                       ``feature_service`` tag (DataHub lineage ``Consumes``).
=====================================  ===============================================================================

The fabric (URN ``env``) is ``PROD`` for the production profile and ``DEV`` for the local one. The metadata goes to a
JSON file of MCPs (DataHub's file format: ``datahub ingest mcps FILE`` loads it) under ``SKEWLESS_HOME/lineage/``,
or to a DataHub server (GMS) when ``DATAHUB_GMS_URL`` is set (:func:`skewless.core.config.datahub_gms`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from skewless import features, lake
from skewless.core.config import COMMITS_TABLE, FEATURE_SERVICE_TAG, Profile, datahub_gms, profile
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from datahub.emitter.mcp import MetadataChangeProposalWrapper
    from feast import FeatureStore

FEAST_PLATFORM = "feast"
ICEBERG_PLATFORM = "iceberg"
MLFLOW_PLATFORM = "mlflow"
#: DataHub's MLflow source names a model version ``<registered model><separator><version>``.
MLFLOW_VERSION_SEPARATOR = "_"
FEATURE_VIEW_SUBTYPE = "Feature View"
FEATURE_SERVICE_SUBTYPE = "Feature Service"
SINKS = ("file", "server")
LINEAGE_FILE = "lineage.json"


class LineageError(SkewlessError, RuntimeError):
    """Lineage cannot be collected or delivered (the message says what to run or set)."""


def fabric(p: Profile) -> str:
    """The DataHub fabric (URN ``env``) of a profile."""
    return "PROD" if p.name == "production" else "DEV"


# --- Iceberg datasets -----------------------------------------------------------------------------------------------

def _avro_name(prefix: str, t) -> str:
    import hashlib

    return f"{prefix}{hashlib.sha1(str(t).encode()).hexdigest()[:16]}"


def _avro_type(t) -> Any:
    """A pyiceberg type as the Avro dict DataHub's Iceberg source builds (its ``ToAvroSchemaIcebergVisitor``), so the
    schema field paths match what that source emits for the same table."""
    from pyiceberg import types as it

    if isinstance(t, it.StructType):
        return {"type": "record", "name": _avro_name("__struct_", t), "native_data_type": str(t),
                "_nullable": True,
                "fields": [{"name": f.name, "doc": f.doc,
                            "type": {**_avro_type(f.field_type), "_nullable": not f.required}} for f in t.fields]}
    if isinstance(t, it.ListType):
        return {"type": "array", "items": _avro_type(t.element_type), "native_data_type": str(t),
                "_nullable": not t.element_required}
    if isinstance(t, it.MapType):
        entry = {"type": "record", "name": _avro_name("__map_entry_", t),
                 "fields": [{"name": "key", "type": {**_avro_type(t.key_type), "_nullable": False}},
                            {"name": "value", "type": {**_avro_type(t.value_type),
                                                       "_nullable": not t.value_required}}]}
        return {"type": "array", "items": entry, "native_data_type": str(t)}
    simple: dict[type, tuple[str, str | None]] = {
        it.BooleanType: ("boolean", None), it.IntegerType: ("int", None), it.LongType: ("long", None),
        it.FloatType: ("float", None), it.DoubleType: ("double", None), it.DateType: ("int", "date"),
        it.TimeType: ("long", "time-micros"), it.TimestampType: ("long", "timestamp-micros"),
        it.TimestamptzType: ("long", "timestamp-micros"), it.StringType: ("string", None),
        it.UUIDType: ("string", "uuid"), it.BinaryType: ("bytes", None)}
    # Types no skewless table uses (decimal, fixed, ...) fall back to a string, as DataHub's visitor does for unknowns.
    avro, logical = simple.get(type(t), ("string", None))
    out = {"type": avro, "native_data_type": str(t)}
    if logical:
        out["logicalType"] = logical
    return out


def schema_fields(schema, descriptions: dict[str, str] | None = None) -> list:
    """DataHub ``SchemaField``s of a pyiceberg schema (``descriptions`` fill in top-level columns without a doc)."""
    import json

    from datahub.ingestion.extractor import schema_util

    avro = _avro_type(schema.as_struct())
    for f in avro["fields"]:
        f["doc"] = f["doc"] or (descriptions or {}).get(f["name"])
    return schema_util.avro_schema_to_mce_fields(json.dumps(avro), default_nullable=False)


def dataset_urn(identifier: str, p: Profile) -> str:
    """URN of an Iceberg table (``namespace.table``), as DataHub's Iceberg source names it."""
    from datahub.emitter.mce_builder import make_dataset_urn

    return make_dataset_urn(ICEBERG_PLATFORM, identifier, fabric(p))


def _iceberg_mcps(identifier: str, p: Profile) -> list["MetadataChangeProposalWrapper"]:
    from datahub.emitter.mce_builder import make_data_platform_urn
    from datahub.emitter.mcp import MetadataChangeProposalWrapper as MCP
    from datahub.metadata.schema_classes import (
        DatasetLineageTypeClass, DatasetPropertiesClass, OtherSchemaClass, SchemaMetadataClass, StatusClass,
        SubTypesClass, UpstreamClass, UpstreamLineageClass)

    table = lake.load_table(identifier, p)
    definition = next((t for t in features.TABLES if t.identifier == identifier), None)
    urn = dataset_urn(identifier, p)
    snapshot = table.current_snapshot()
    props = {k: str(v) for k, v in table.properties.items()}
    props.update({"location": table.location(), "format-version": str(table.format_version),
                  "current-snapshot-id": str(snapshot.snapshot_id) if snapshot else "none"})
    descriptions = {f.name: f.description for f in definition.features} if definition else {}
    out = [
        MCP(entityUrn=urn, aspect=StatusClass(removed=False)),
        MCP(entityUrn=urn, aspect=SubTypesClass(typeNames=["Table"])),
        MCP(entityUrn=urn, aspect=DatasetPropertiesClass(
            name=identifier.split(".")[-1], qualifiedName=identifier, customProperties=props,
            description=definition.description if definition else None)),
        MCP(entityUrn=urn, aspect=SchemaMetadataClass(
            schemaName=identifier, platform=make_data_platform_urn(ICEBERG_PLATFORM), version=0, hash="",
            platformSchema=OtherSchemaClass(rawSchema=str(table.schema())),
            fields=schema_fields(table.schema(), descriptions))),
    ]
    if definition is not None:
        # `skewless features build` computes every feature table from abukix.commits and nothing else.
        built_from = table.properties.get(features.COMMITS_SNAPSHOT)
        out.append(MCP(entityUrn=urn, aspect=UpstreamLineageClass(upstreams=[UpstreamClass(
            dataset=dataset_urn(COMMITS_TABLE, p), type=DatasetLineageTypeClass.TRANSFORMED,
            properties={"built_by": "skewless features build",
                        "commits_snapshot": built_from or "none",
                        "built_through": table.properties.get(features.BUILT_THROUGH, "none")})])))
    return out


# --- Feast ----------------------------------------------------------------------------------------------------------

def _feature_data_type(dtype) -> str:
    """MLFeatureDataType of a Feast type, as DataHub's Feast source maps it."""
    from datahub.metadata.schema_classes import MLFeatureDataTypeClass as T
    from feast import types as ft

    if isinstance(dtype, ft.Array):
        return T.SEQUENCE
    return {ft.Int32: T.ORDINAL, ft.Int64: T.ORDINAL, ft.Float32: T.CONTINUOUS, ft.Float64: T.CONTINUOUS,
            ft.String: T.TEXT, ft.Bool: T.BINARY, ft.Bytes: T.BYTE, ft.UnixTimestamp: T.TIME}.get(dtype, T.UNKNOWN)


def _entity_data_type(value_type) -> str:
    from datahub.metadata.schema_classes import MLFeatureDataTypeClass as T
    from feast import ValueType as V

    return {V.STRING: T.TEXT, V.INT32: T.ORDINAL, V.INT64: T.ORDINAL, V.DOUBLE: T.CONTINUOUS, V.FLOAT: T.CONTINUOUS,
            V.BOOL: T.BINARY, V.BYTES: T.BYTE, V.UNIX_TIMESTAMP: T.TIME}.get(value_type, T.UNKNOWN)


def source_identifier(source) -> str:
    """The Iceberg identifier (``namespace.table``) a Feast data source reads; LineageError for any other source."""
    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

    if not isinstance(source, IcebergSource):
        raise LineageError(f"data source {source.name!r} is a {type(source).__name__}, not an IcebergSource: "
                           "skewless lineage only knows Iceberg sources")
    return f"{source.namespace}.{source.iceberg_table}"


def feature_table_urn(store: "FeatureStore", name: str) -> str:
    """URN of a feature view or service (DataHub's Feast source: ``(feast, <project>.<name>)``)."""
    from datahub.emitter.mce_builder import make_ml_feature_table_urn

    return make_ml_feature_table_urn(FEAST_PLATFORM, f"{store.project}.{name}")


def feature_urn(store: "FeatureStore", view: str, feature: str) -> str:
    from datahub.emitter.mce_builder import make_ml_feature_urn

    return make_ml_feature_urn(f"{store.project}.{view}", feature)


def primary_key_urn(store: "FeatureStore", view: str, entity: str) -> str:
    from datahub.emitter.mce_builder import make_ml_primary_key_urn

    return make_ml_primary_key_urn(f"{store.project}.{view}", entity)


def _common(urn: str, owner: str | None, subtype: str | None, store: "FeatureStore") -> list:
    from datahub.emitter.mce_builder import make_user_urn
    from datahub.emitter.mcp import MetadataChangeProposalWrapper as MCP
    from datahub.metadata.schema_classes import (
        BrowsePathsClass, OwnerClass, OwnershipClass, OwnershipTypeClass, StatusClass, SubTypesClass)

    out = [MCP(entityUrn=urn, aspect=StatusClass(removed=False))]
    if urn.startswith("urn:li:mlFeatureTable:"):
        out.append(MCP(entityUrn=urn, aspect=BrowsePathsClass(paths=[f"/feast/{store.project}"])))
    if subtype:
        out.append(MCP(entityUrn=urn, aspect=SubTypesClass(typeNames=[subtype])))
    if owner:
        out.append(MCP(entityUrn=urn, aspect=OwnershipClass(owners=[
            OwnerClass(owner=make_user_urn(owner), type=OwnershipTypeClass.TECHNICAL_OWNER)])))
    return out


def _feast_mcps(store: "FeatureStore", p: Profile) -> tuple[list, dict[str, list[str]], set[str]]:
    """MCPs of entities, views, features and services; the features of every service; the tables read."""
    from datahub.emitter.mcp import MetadataChangeProposalWrapper as MCP
    from datahub.metadata.schema_classes import (
        MLFeaturePropertiesClass, MLFeatureTablePropertiesClass, MLPrimaryKeyPropertiesClass)

    views = sorted(store.list_feature_views(), key=lambda v: v.name)
    if not views:
        raise LineageError("the Feast registry holds no feature views: run `skewless apply` first")
    out: list = []
    tables: set[str] = set()
    view_keys: dict[str, list[str]] = {}
    for fv in views:
        ident = source_identifier(fv.batch_source)
        tables.add(ident)
        sources = [dataset_urn(ident, p)]
        keys = []
        for name in fv.entities:
            entity = store.get_entity(name)
            urn = primary_key_urn(store, fv.name, entity.name)
            keys.append(urn)
            out += _common(urn, entity.owner, None, store)
            out.append(MCP(entityUrn=urn, aspect=MLPrimaryKeyPropertiesClass(
                description=entity.description, dataType=_entity_data_type(entity.value_type), sources=sources)))
        view_keys[fv.name] = keys
        feature_urns = []
        for f in fv.features:
            urn = feature_urn(store, fv.name, f.name)
            feature_urns.append(urn)
            out += _common(urn, fv.owner, None, store)
            out.append(MCP(entityUrn=urn, aspect=MLFeaturePropertiesClass(
                description=f.description or None, dataType=_feature_data_type(f.dtype), sources=sources,
                customProperties={"feast_type": str(f.dtype), "feature_view": fv.name})))
        urn = feature_table_urn(store, fv.name)
        out += _common(urn, fv.owner, FEATURE_VIEW_SUBTYPE, store)
        out.append(MCP(entityUrn=urn, aspect=MLFeatureTablePropertiesClass(
            description=fv.description, mlFeatures=feature_urns, mlPrimaryKeys=keys,
            customProperties={**fv.tags, "ttl": str(fv.ttl), "source": ident})))
    service_features: dict[str, list[str]] = {}
    for fs in sorted(store.list_feature_services(), key=lambda s: s.name):
        urns = [feature_urn(store, proj.name, f.name) for proj in fs.feature_view_projections for f in proj.features]
        names = [proj.name for proj in fs.feature_view_projections]
        service_features[fs.name] = urns
        urn = feature_table_urn(store, fs.name)
        out += _common(urn, fs.owner, FEATURE_SERVICE_SUBTYPE, store)
        out.append(MCP(entityUrn=urn, aspect=MLFeatureTablePropertiesClass(
            description=fs.description, mlFeatures=urns,
            mlPrimaryKeys=[k for v in names for k in view_keys.get(v, [])],
            customProperties={**fs.tags, "feature_views": ",".join(names)})))
    return out, service_features, tables


# --- MLflow ---------------------------------------------------------------------------------------------------------

def registered_model_versions(p: Profile | None = None) -> tuple[list, list[str]]:
    """Every model version of the profile's MLflow registry, and notes (no registry is a note, not an error).

    A local SQLite registry that does not exist yet is not created.
    """
    p = p or profile()
    uri = p.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return [], [f"no MLflow registry at {uri} (no model registered in this home)"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions, token = [], None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=token)
        versions += list(page)
        token = page.token
        if not token:
            break
    if not versions:
        return [], [f"the MLflow registry at {uri} holds no model version"]
    return sorted(versions, key=lambda mv: (mv.name, int(mv.version))), []


def model_version_urn(name: str, version: str | int, p: Profile) -> str:
    """URN of a registered model version (DataHub's MLflow source: ``(mlflow, <name>_<version>, <env>)``)."""
    from datahub.emitter.mce_builder import make_ml_model_urn

    return make_ml_model_urn(MLFLOW_PLATFORM, f"{name}{MLFLOW_VERSION_SEPARATOR}{version}", fabric(p))


def model_group_urn(name: str, p: Profile) -> str:
    from datahub.emitter.mce_builder import make_ml_model_group_urn

    return make_ml_model_group_urn(MLFLOW_PLATFORM, name, fabric(p))


def _model_mcps(store: "FeatureStore", service_features: dict[str, list[str]], p: Profile) -> tuple[list, list[str]]:
    from datahub.emitter.mcp import MetadataChangeProposalWrapper as MCP
    from datahub.metadata.schema_classes import (
        MLHyperParamClass, MLMetricClass, MLModelGroupPropertiesClass, MLModelPropertiesClass, StatusClass,
        TimeStampClass, VersionTagClass)

    versions, notes = registered_model_versions(p)
    if not versions:
        return [], [f"{n}: model lineage skipped" for n in notes]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=p.mlflow_tracking_uri, registry_uri=p.mlflow_tracking_uri)
    out: list = []
    for name in sorted({mv.name for mv in versions}):
        rm = client.get_registered_model(name)
        urn = model_group_urn(name, p)
        out.append(MCP(entityUrn=urn, aspect=StatusClass(removed=False)))
        out.append(MCP(entityUrn=urn, aspect=MLModelGroupPropertiesClass(
            name=name, description=rm.description or None, customProperties={k: str(v) for k, v in rm.tags.items()},
            created=TimeStampClass(time=rm.creation_timestamp), lastModified=TimeStampClass(
                time=rm.last_updated_timestamp))))
    for mv in versions:
        tags = {k: str(v) for k, v in (mv.tags or {}).items()}
        service = tags.get(FEATURE_SERVICE_TAG)
        if not service:
            notes.append(f"model {mv.name} version {mv.version} has no {FEATURE_SERVICE_TAG!r} tag: "
                         "no feature lineage for it")
        elif service not in service_features:
            notes.append(f"model {mv.name} version {mv.version} names feature service {service!r}, which the Feast "
                         "registry does not hold: no feature lineage for it")
        else:
            tags["feature_service_urn"] = feature_table_urn(store, service)
        hyper, metrics = None, None
        if mv.run_id:
            try:
                run = client.get_run(mv.run_id)
                hyper = [MLHyperParamClass(name=k, value=str(v)) for k, v in sorted(run.data.params.items())]
                metrics = [MLMetricClass(name=k, value=str(v)) for k, v in sorted(run.data.metrics.items())]
                tags["mlflow_run_id"] = mv.run_id
            except Exception as e:  # a version may outlive its run (deleted experiment)
                notes.append(f"model {mv.name} version {mv.version}: run {mv.run_id} unreadable ({e})")
        urn = model_version_urn(mv.name, mv.version, p)
        out.append(MCP(entityUrn=urn, aspect=StatusClass(removed=False)))
        out.append(MCP(entityUrn=urn, aspect=MLModelPropertiesClass(
            name=f"{mv.name}{MLFLOW_VERSION_SEPARATOR}{mv.version}", description=mv.description or None,
            version=VersionTagClass(versionTag=str(mv.version)), customProperties=tags,
            created=TimeStampClass(time=mv.creation_timestamp),
            lastModified=TimeStampClass(time=mv.last_updated_timestamp),
            hyperParams=hyper, trainingMetrics=metrics,
            mlFeatures=list(service_features.get(service, [])) if service else [],
            groups=[model_group_urn(mv.name, p)])))
    return out, notes


# --- collect and deliver ----------------------------------------------------------------------------------------

@dataclass
class Lineage:
    """The metadata of one deployment, as DataHub MCPs, with notes on what was skipped."""

    mcps: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def urns(self, entity_type: str | None = None) -> list[str]:
        """Distinct entity URNs (optionally of one entity type, e.g. ``dataset``), in emission order."""
        seen = dict.fromkeys(m.entityUrn for m in self.mcps if entity_type in (None, m.entityType))
        return list(seen)


def collect(p: Profile | None = None) -> Lineage:
    """Read the Feast registry, the Iceberg catalog and the MLflow registry of the profile into DataHub MCPs.

    Needs ``skewless apply`` (and so ingest and build) to have run; registered models are optional.
    """
    from skewless.ops.feast_ops import feature_store

    p = p or profile()
    store = feature_store(p)
    feast_out, service_features, tables = _feast_mcps(store, p)
    datasets: list = []
    for ident in [COMMITS_TABLE] + sorted(tables):
        datasets += _iceberg_mcps(ident, p)
    models, notes = _model_mcps(store, service_features, p)
    return Lineage(mcps=datasets + feast_out + models, notes=notes)


def write_file(lin: Lineage, path: Path) -> Path:
    """Write the MCPs as a DataHub metadata file (a JSON list; ``datahub ingest mcps`` loads it), atomically."""
    from datahub.ingestion.sink.file import write_metadata_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write_metadata_file(tmp, lin.mcps)
    os.replace(tmp, path)
    return path


def read_file(path: Path) -> list:
    """Read a lineage file back with DataHub's own reader (validates every record); ours holds MCPs only."""
    from datahub.ingestion.source.file import read_metadata_file

    return list(read_metadata_file(Path(path)))


def send(lin: Lineage, url: str, token: str | None = None) -> int:
    """Emit the MCPs to the DataHub server (GMS) at ``url``; returns the number sent."""
    from datahub.emitter.rest_emitter import DatahubRestEmitter

    emitter = DatahubRestEmitter(gms_server=url, token=token, timeout_sec=30, retry_max_times=2)
    try:
        emitter.test_connection()
    except Exception as e:
        raise LineageError(f"DataHub at {url} is unreachable or is not GMS ({e}); check DATAHUB_GMS_URL") from e
    try:
        emitter.emit_mcps(lin.mcps)
    finally:
        emitter.close()
    return len(lin.mcps)


def default_path(p: Profile | None = None) -> Path:
    """Where the file sink writes: ``SKEWLESS_HOME/lineage/lineage.json``."""
    return (p or profile()).home / "lineage" / LINEAGE_FILE


def emit(sink: str | None = None, out: Path | None = None, p: Profile | None = None) -> tuple[Lineage, str]:
    """Collect the lineage and deliver it: ``sink`` ``file`` (default, or ``out``) or ``server``
    (``DATAHUB_GMS_URL``; the default when that is set). Returns the lineage and where it went."""
    p = p or profile()
    gms = datahub_gms()
    sink = sink or ("server" if gms else "file")
    if sink not in SINKS:
        raise LineageError(f"sink {sink!r} is not one of {', '.join(SINKS)}")
    if sink == "server" and gms is None:
        raise LineageError("--sink server needs DATAHUB_GMS_URL (the DataHub GMS address, e.g. http://localhost:8080)")
    lin = collect(p)
    if sink == "file" or gms is None:
        return lin, str(write_file(lin, out or default_path(p)))
    url, token = gms
    send(lin, url, token)
    return lin, url


def iter_edges(mcps: Iterable) -> Iterable[tuple[str, str, str]]:
    """Lineage edges (upstream URN, relation, downstream URN) of MCPs, as DataHub draws them."""
    for m in mcps:
        a = m.aspect
        name = m.aspectName
        if name == "upstreamLineage":
            for u in a.upstreams:
                yield u.dataset, "DownstreamOf", m.entityUrn
        elif name in ("mlFeatureProperties", "mlPrimaryKeyProperties"):
            for s in a.sources or []:
                yield s, "DerivedFrom", m.entityUrn
        elif name == "mlFeatureTableProperties":
            for f in a.mlFeatures or []:
                yield f, "Contains", m.entityUrn
        elif name == "mlModelProperties":
            for f in a.mlFeatures or []:
                yield f, "Consumes", m.entityUrn
            for g in a.groups or []:
                yield m.entityUrn, "MemberOf", g
