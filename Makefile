# Everything a fresh machine needs: `make demo` (the main job) and `make test` (all tests).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
AIRFLOW_VERSION ?= 3.3.2
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# The oldest Airflow the README promises, in a second venv (`make test-airflow-2.11`).
AIRFLOW_211_VERSION ?= 2.11.0
COMMON_COMPAT_211 ?= apache-airflow-providers-common-compat>=1.23.0
VENV211 ?= .venv211
PY211 := $(VENV211)/bin/python

.PHONY: install test test-fast test-browser test-deployment test-airflow-2.11 package-check lint demo bench emulator clean

install: $(VENV)/.installed

# Rebuilt when pyproject.toml changes; the stamp keeps a rerun fast.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test,browser,lineage]"
	@touch $@

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not airflow and not browser"

test-browser: install
	$(PY) -m pytest -q -m browser

# Airflow's real components in a distributed deployment: CeleryExecutor with Redis, a fresh PostgreSQL database
# (WFS_PG_URL, WFS_REDIS_URL), two Celery workers. The embedded one (LocalExecutor, SQLite) runs in `make test`.
test-deployment: install
	$(PIP) "apache-airflow==$(AIRFLOW_VERSION)" apache-airflow-providers-celery apache-airflow-providers-postgres \
		psycopg2-binary "psycopg[binary]" asyncpg "celery[redis]<5.7"
	WFS_DEPLOYMENT=1 $(PY) -m pytest -q -m deployment tests/deployment/test_distributed.py

# Unit, integration, emulator and `airflow dags test` suites on Airflow 2.11 (no browser: the 2.11 UI is
# another application; tests/deployment, if any, targets the current Airflow only).
$(VENV211)/.installed: pyproject.toml
	@test -x $(PY211) || $(PYTHON) -m venv $(VENV211)
	$(PY211) -m pip install --quiet --disable-pip-version-check \
		"apache-airflow==$(AIRFLOW_211_VERSION)" "$(COMMON_COMPAT_211)" -e ".[test]"
	@touch $@

test-airflow-2.11: $(VENV211)/.installed
	$(PY211) -m pytest -q -m "not browser" tests --ignore=tests/browser --ignore=tests/deployment -p no:cacheprovider

# The release package: sdist and wheel built and checked (twine, LICENSE, license expression), the wheel installed
# into a fresh venv with its runtime dependencies and Airflow $(AIRFLOW_VERSION); Airflow registers the provider and
# the example DAGs import (.ci/package-check).
package-check: install
	PY=$(PY) PYTHON=$(PYTHON) AIRFLOW_VERSION=$(AIRFLOW_VERSION) .ci/package-check

lint: install
	$(VENV)/bin/ruff check airflow_provider_workflowsoft dags tests bench
	$(VENV)/bin/mypy

demo: install
	$(PY) -m airflow_provider_workflowsoft.demo

bench: install
	$(PIP) -e ".[bench]"
	$(PY) bench/run_all.py

emulator: install
	$(VENV)/bin/workflowsoft-emulator --port 8765

clean:
	rm -rf $(VENV) $(VENV211) .demo dist build .pytest_cache .mypy_cache .ruff_cache tests/output
