# The two commands of the README:  make demo  (the main job on the embedded default)  and  make test.
# Everything is installed from the lock file (uv.lock) into project-local environments; uv itself is
# bootstrapped from PyPI into .bootstrap/ when it is not on the PATH.
PYTHON ?= python3.11
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.bootstrap/bin/uv)
UV_VERSION := 0.13.9
# The main environment: core + dev + train + serve (+ lineage, spark); Airflow lives in its own (psutil conflict).
MAIN_GROUPS := --group dev --group train --group serve --group lineage --group spark
AIRFLOW_ENV := $(CURDIR)/.venv-airflow
AIRFLOW_GROUPS := --no-default-groups --group dev --group train --group airflow --group lineage
PYTEST_ARGS ?=

.PHONY: demo test test-main test-airflow setup setup-airflow tools bench clean

$(CURDIR)/.bootstrap/bin/uv:
	$(PYTHON) -m venv .bootstrap && .bootstrap/bin/pip install --quiet uv==$(UV_VERSION)

setup: $(UV)
	$(UV) sync --frozen --python $(PYTHON) $(MAIN_GROUPS)

setup-airflow: $(UV)
	UV_PROJECT_ENVIRONMENT=$(AIRFLOW_ENV) $(UV) sync --frozen --python $(PYTHON) $(AIRFLOW_GROUPS)

demo: setup
	.venv/bin/skewless demo

# nats-server (Debian package nats-server) is the production profile's event broker (ADR 0015); .ci/run starts it.
# promtool (Debian package prometheus) runs the alert-rule tests (monitoring/alerts_test.yaml); without it they skip.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Java 17 and the JDBC drivers of Spark's Iceberg catalog (SQLite: local, PostgreSQL: production) for the Spark engine
# (ADR 0008); without them the Spark tests skip.
JDBC_JARS := /usr/share/java/sqlite-jdbc.jar /usr/share/java/postgresql.jar
tools:
	@(command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]) || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends nats-server)
	@command -v promtool >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends prometheus)
	@(command -v java >/dev/null && ls $(JDBC_JARS) >/dev/null 2>&1) || ($(SUDO) apt-get update && \
	  $(SUDO) apt-get install -y --no-install-recommends openjdk-17-jre-headless libxerial-sqlite-jdbc-java \
	  libpostgresql-jdbc-java)

test: tools test-main test-airflow

test-main: setup
	.venv/bin/python -m pytest -m "not airflow" $(PYTEST_ARGS)

test-airflow: setup-airflow
	$(AIRFLOW_ENV)/bin/python -m pytest -m airflow $(PYTEST_ARGS)

bench: setup
	.venv/bin/skewless bench

clean:
	rm -rf .venv .venv-airflow .bootstrap .pytest_cache
