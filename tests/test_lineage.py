"""DataHub lineage of a deployment, read back with DataHub's own classes: Iceberg tables (platform iceberg, with their
schema), Feast views and services, the registered model version, and every edge
commits → feature tables → features of the views → service → model version."""

from __future__ import annotations

import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from skewless.core import config
from skewless.ops import lineage
from skewless.core.config import COMMITS_TABLE

UNTIL = date(2026, 8, 22)
SERVICE = "next_week_commits_v1"
MODEL = "next_week_commits"


@pytest.fixture(scope="module", autouse=True)
def _forget_datahub_sdk():
    """Drop ``datahub.sdk`` from ``sys.modules`` after this module's tests.

    DataHub's file source imports ``datahub.sdk``, whose module ``__getattr__`` raises KeyError instead of
    AttributeError (acryl-datahub 1.7.0.17). Any later scan of ``sys.modules`` with ``getattr(m, name, None)`` —
    skops does one when MLflow logs an sklearn model — then crashes in an unrelated test of the same process.
    Production never mixes the two in one process (lineage and training are separate commands).
    """
    import sys

    yield
    for name in [m for m in sys.modules if m == "datahub.sdk" or m.startswith("datahub.sdk.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, sample_parquet):
    """A home after ingest → build → apply, with one registered model version tagged with its feature service
    (as training registers it) and one untagged version."""
    from mlflow.tracking import MlflowClient

    from skewless import features
    from skewless.ops import feast_ops
    from skewless.lake import ingest

    home = tmp_path_factory.mktemp("lineage") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKEWLESS_ENV", "local")
        mp.setenv("SKEWLESS_HOME", str(home))
        for var in ("FEAST_FS_YAML_FILE_PATH", "MLFLOW_TRACKING_URI", "DATAHUB_GMS_URL", "DATAHUB_GMS_TOKEN"):
            mp.delenv(var, raising=False)
        p = config.activate()
        ingest.ingest([sample_parquet])
        features.build(UNTIL, p)
        feast_ops.apply(p)
        uri = p.mlflow_tracking_uri
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.create_experiment(MODEL, artifact_location=(home / "mlartifacts").as_uri())
        run = client.create_run(exp)
        client.log_param(run.info.run_id, "learning_rate", "0.05")
        client.log_metric(run.info.run_id, "test_mae", 1.5)
        client.create_registered_model(MODEL, description="next-week commits of a repository")
        client.create_model_version(MODEL, source=(home / "mlartifacts" / "model").as_uri(), run_id=run.info.run_id,
                                    tags={lineage.FEATURE_SERVICE_TAG: SERVICE})
        client.create_model_version(MODEL, source=(home / "mlartifacts" / "model2").as_uri())
        yield p


@pytest.fixture
def env_of(deployed, monkeypatch):
    """The deployed home's environment, for one test."""
    for k, v in deployed.feast_env().items():
        monkeypatch.setenv(k, v)
    for var in ("MLFLOW_TRACKING_URI", "DATAHUB_GMS_URL", "DATAHUB_GMS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return deployed


@pytest.fixture
def emitted(env_of):
    lin, where = lineage.emit()
    return lin, Path(where)


def _aspects(mcps, name: str) -> dict:
    return {m.entityUrn: m.aspect for m in mcps if m.aspectName == name}


def test_file_sink_is_datahub_metadata_file(emitted, env_of):
    from datahub.emitter.mcp import MetadataChangeProposalWrapper
    from datahub.ingestion.api.common import PipelineContext
    from datahub.ingestion.source.file import GenericFileSource

    lin, path = emitted
    assert path == env_of.home / "lineage" / "lineage.json"
    back = lineage.read_file(path)  # DataHub's reader: from_obj + validate on every record
    assert all(isinstance(m, MetadataChangeProposalWrapper) for m in back)
    assert [(m.entityUrn, m.aspectName) for m in back] == [(m.entityUrn, m.aspectName) for m in lin.mcps]
    # What `datahub ingest` with a file source would read from it.
    source = GenericFileSource.create({"path": str(path)}, PipelineContext(run_id="test-lineage"))
    assert sum(1 for _ in source.get_workunits_internal()) == len(lin.mcps)
    assert not source.get_report().failures


def test_iceberg_tables_have_platform_iceberg_and_their_schema(emitted, env_of):
    from skewless import lake

    _, path = emitted
    raw = path.read_text()
    assert "urn:li:dataPlatform:unknown" not in raw and "urn:li:dataPlatform:iceberg" in raw
    mcps = lineage.read_file(path)
    schemas = _aspects(mcps, "schemaMetadata")
    for ident in (COMMITS_TABLE, "features.repo_activity", "features.author_activity"):
        urn = f"urn:li:dataset:(urn:li:dataPlatform:iceberg,{ident},DEV)"
        assert urn in schemas, f"{ident} missing"
        assert schemas[urn].platform == "urn:li:dataPlatform:iceberg"
        iceberg = lake.load_table(ident, env_of).schema()
        fields = schemas[urn].fields
        assert [f.fieldPath.rsplit(".", 1)[-1] for f in fields] == [f.name for f in iceberg.fields]
        assert [f.nativeDataType for f in fields] == [str(f.field_type) for f in iceberg.fields]
        assert [f.nullable for f in fields] == [not f.required for f in iceberg.fields]
    repo = {f.fieldPath.rsplit(".", 1)[-1]: f for f in
            schemas["urn:li:dataset:(urn:li:dataPlatform:iceberg,features.repo_activity,DEV)"].fields}
    assert repo["commits_last_7d"].description == "commits with committed_at in [D-7d, D)"
    assert repo["event_timestamp"].nativeDataType == "timestamptz"


def test_every_lineage_edge_from_commits_to_the_model_version(emitted, env_of):
    from feast import FeatureStore

    from skewless.ops.feast_ops import feature_store

    store: FeatureStore = feature_store(env_of)
    mcps = lineage.read_file(emitted[1])
    commits = lineage.dataset_urn(COMMITS_TABLE, env_of)
    repo_table = lineage.dataset_urn("features.repo_activity", env_of)
    author_table = lineage.dataset_urn("features.author_activity", env_of)

    # commits → feature tables (with the commits snapshot the build read)
    upstream = _aspects(mcps, "upstreamLineage")
    for table in (repo_table, author_table):
        [u] = upstream[table].upstreams
        assert u.dataset == commits and u.type == "TRANSFORMED" and u.properties["commits_snapshot"] != "none"
    assert commits not in upstream

    # feature tables → features → feature views (MLFeatureTable on platform feast)
    feats = _aspects(mcps, "mlFeatureProperties")
    tables = _aspects(mcps, "mlFeatureTableProperties")
    subtypes = _aspects(mcps, "subTypes")
    for fv in store.list_feature_views():  # the live view's table is the stream's abukix.commit_events
        table = lineage.dataset_urn(lineage.source_identifier(fv.batch_source), env_of)
        view_urn = f"urn:li:mlFeatureTable:(urn:li:dataPlatform:feast,skewless.{fv.name})"
        assert subtypes[view_urn].typeNames == [lineage.FEATURE_VIEW_SUBTYPE]
        expected = [f"urn:li:mlFeature:(skewless.{fv.name},{f.name})" for f in fv.features]
        assert tables[view_urn].mlFeatures == expected
        for urn in expected:
            assert feats[urn].sources == [table]
        [key] = tables[view_urn].mlPrimaryKeys
        assert _aspects(mcps, "mlPrimaryKeyProperties")[key].sources == [table]

    # feature views → feature service: the service holds the very feature URNs of the view it selects
    service_urn = f"urn:li:mlFeatureTable:(urn:li:dataPlatform:feast,skewless.{SERVICE})"
    assert subtypes[service_urn].typeNames == [lineage.FEATURE_SERVICE_SUBTYPE]
    service = store.get_feature_service(SERVICE)
    service_features = [f"urn:li:mlFeature:(skewless.{p.name},{f.name})"
                        for p in service.feature_view_projections for f in p.features]
    assert len(service_features) == 6 and tables[service_urn].mlFeatures == service_features
    view = tables["urn:li:mlFeatureTable:(urn:li:dataPlatform:feast,skewless.repo_activity)"]
    assert set(service_features) <= set(view.mlFeatures)
    assert tables[service_urn].customProperties["feature_views"] == "repo_activity"

    # feature service → registered model version (MLflow naming of DataHub's MLflow source), in its group
    models = _aspects(mcps, "mlModelProperties")
    v1 = f"urn:li:mlModel:(urn:li:dataPlatform:mlflow,{MODEL}_1,DEV)"
    assert models[v1].mlFeatures == service_features
    assert models[v1].customProperties[lineage.FEATURE_SERVICE_TAG] == SERVICE
    assert models[v1].customProperties["feature_service_urn"] == service_urn
    assert models[v1].groups == [f"urn:li:mlModelGroup:(urn:li:dataPlatform:mlflow,{MODEL},DEV)"]
    assert [(h.name, h.value) for h in models[v1].hyperParams] == [("learning_rate", "0.05")]
    assert [(m.name, m.value) for m in models[v1].trainingMetrics] == [("test_mae", "1.5")]
    assert _aspects(mcps, "mlModelGroupProperties")[models[v1].groups[0]].description.startswith("next-week")

    # The edges as DataHub draws them, end to end for one feature.
    edges = set(lineage.iter_edges(mcps))
    f7 = "urn:li:mlFeature:(skewless.repo_activity,commits_last_7d)"
    assert {(commits, "DownstreamOf", repo_table), (repo_table, "DerivedFrom", f7),
            (f7, "Contains", "urn:li:mlFeatureTable:(urn:li:dataPlatform:feast,skewless.repo_activity)"),
            (f7, "Contains", service_urn), (f7, "Consumes", v1)} <= edges


def test_a_model_version_without_service_tag_gets_no_features_and_a_note(emitted):
    lin, path = emitted
    v2 = f"urn:li:mlModel:(urn:li:dataPlatform:mlflow,{MODEL}_2,DEV)"
    assert _aspects(lineage.read_file(path), "mlModelProperties")[v2].mlFeatures == []
    assert any(f"{MODEL} version 2 has no 'feature_service' tag" in n for n in lin.notes)


def test_no_registry_skips_the_model_with_a_note(env_of, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'absent.db'}")
    lin = lineage.collect(env_of)
    assert lin.urns("mlModel") == [] and lin.urns("mlModelGroup") == []
    assert any("model lineage skipped" in n for n in lin.notes)
    assert not (tmp_path / "absent.db").exists()
    # datasets: abukix.commits, abukix.commit_events (the live view's), two feature tables; feature tables: three
    # views and three services
    assert len(lin.urns("dataset")) == 4 and len(lin.urns("mlFeatureTable")) == 6


class _FakeGms(BaseHTTPRequestHandler):
    """Just enough of DataHub GMS's Rest.li API for DatahubRestEmitter: /config and ingestProposalBatch."""

    received: list[dict] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        assert self.path == "/config"
        self._reply({"noCode": "true", "versions": {"acryldata/datahub": {"version": "v1.3.0"}}})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        self._reply({"value": []})

    def log_message(self, *args):
        pass


def test_server_sink_posts_the_same_mcps_to_datahub(env_of, monkeypatch):
    from datahub.emitter.serialization_helper import post_json_transform
    from datahub.metadata.schema_classes import MetadataChangeProposalClass

    _FakeGms.received = []
    server = HTTPServer(("127.0.0.1", 0), _FakeGms)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("DATAHUB_GMS_URL", f"http://127.0.0.1:{server.server_port}/")
        monkeypatch.setenv("DATAHUB_GMS_TOKEN", "secret-token")
        lin, where = lineage.emit()  # a GMS URL in the environment makes the server the default sink
    finally:
        server.shutdown()
        server.server_close()
    assert where == f"http://127.0.0.1:{server.server_port}"
    posted = [MetadataChangeProposalClass.from_obj(post_json_transform(m))
              for r in _FakeGms.received for m in r["body"]["proposals"]]
    assert all(r["path"] == "/aspects?action=ingestProposalBatch" for r in _FakeGms.received)
    assert all(r["auth"] == "Bearer secret-token" for r in _FakeGms.received)
    assert [(m.entityUrn, m.aspectName) for m in posted] == [(m.entityUrn, m.aspectName) for m in lin.mcps]
    assert all(m.validate() for m in posted)


def test_server_sink_errors_name_the_problem(env_of, monkeypatch):
    monkeypatch.delenv("DATAHUB_GMS_URL", raising=False)
    with pytest.raises(lineage.LineageError, match="needs DATAHUB_GMS_URL"):
        lineage.emit("server")
    with pytest.raises(lineage.LineageError, match="not one of"):
        lineage.emit("kafka")
    monkeypatch.setenv("DATAHUB_GMS_URL", "localhost:8080")
    with pytest.raises(config.ProfileError, match="not an http"):
        lineage.emit()


def test_datahub_gms_accessor():
    assert config.datahub_gms({}) is None
    assert config.datahub_gms({"DATAHUB_GMS_URL": " "}) is None
    assert config.datahub_gms({"DATAHUB_GMS_URL": "http://gms:8080/"}) == ("http://gms:8080", None)
    assert config.datahub_gms({"DATAHUB_GMS_URL": "https://x/gms", "DATAHUB_GMS_TOKEN": "t"}) == ("https://x/gms", "t")


def test_lineage_before_apply_says_what_to_run(home):
    with pytest.raises(lineage.LineageError, match="skewless apply"):
        lineage.collect()


def test_the_service_tag_has_one_definition():
    """Training, serving and lineage read the tag from skewless.core.config; none of them redefines it."""
    import serving.predictor
    import training.train

    assert training.train.FEATURE_SERVICE_TAG is serving.predictor.FEATURE_SERVICE_TAG is lineage.FEATURE_SERVICE_TAG
    for module in (training.train, serving.predictor, lineage):
        assert 'FEATURE_SERVICE_TAG = ' not in Path(module.__file__).read_text(), module.__name__
