# Everything a fresh machine needs: `make demo` (the main job) and `make test` (all tests).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
AIRFLOW_VERSION ?= 3.3.2
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# pytest-xdist workers for `make test` and the other Airflow versions' suites. `--dist loadfile`: a file's tests run
# on one worker, so a module's fixtures (a deployment, an Airflow API server) start once and its figures files have
# one writer (`loadgroup` ignores xdist_group marks under pytest 9). `--no-loadscope-reorder`: modules are handed out
# in collection order, slowest first (tests/conftest.py SLOW_MODULES), not the default's most tests first (which left
# the one-test modules of several minutes for the end).
# 3 on 2 cores: the deployment tests mostly wait for Airflow's components, a third worker runs DAG runs meanwhile.
TEST_WORKERS ?= 3  # 0: no xdist, one test after the other (the embedded deployments run on PostgreSQL when reachable)
PYTEST := -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# The other Airflow versions CI tests, each in its own venv (`make test-airflow-<version>`, venv .venv<digits>):
# the oldest the README promises, and the latest patch of every 3.x minor that pyproject.toml admits. 3.0 (excluded
# in pyproject.toml, not in .ci/run until its suite passes) runs under constraints/airflow-3.0.txt (plain installs
# take a pydantic, cadwyn and fastapi it was not built for).
AIRFLOW_211_VERSION ?= 2.11.0
AIRFLOW_PINS_2.11 := "apache-airflow==$(AIRFLOW_211_VERSION)" "apache-airflow-providers-common-compat>=1.23.0"
AIRFLOW_PINS_3.0 := "apache-airflow==3.0.6" -c constraints/airflow-3.0.txt
AIRFLOW_PINS_3.1 := "apache-airflow==3.1.8"
OTHER_AIRFLOWS := 2.11 3.0 3.1

# test-airflow-<version> is a pattern rule, so it cannot be .PHONY (make skips implicit rules for phony targets).
.PHONY: install test test-fast test-browser test-deployment test-deployment-3.1 package-check lint demo bench emulator clean

install: $(VENV)/.installed

# Rebuilt when pyproject.toml changes; the stamp keeps a rerun fast.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test,browser,lineage,messaging]"
	@touch $@

test: install
	$(PY) $(PYTEST)

test-fast: install
	$(PY) $(PYTEST) -m "not airflow and not browser and not deployment"

test-browser: install
	$(PY) -m pytest -q -m browser

# Airflow's real components in a distributed deployment: CeleryExecutor with Redis, a fresh PostgreSQL database
# (WFS_PG_URL, WFS_REDIS_URL), two Celery workers. The embedded one (LocalExecutor, PostgreSQL when reachable, else SQLite) runs in `make test`.
test-deployment: install
	$(PIP) "apache-airflow==$(AIRFLOW_VERSION)" apache-airflow-providers-celery apache-airflow-providers-postgres \
		psycopg2-binary "psycopg[binary]" asyncpg "celery[redis]<5.7"
	WFS_DEPLOYMENT=1 $(PY) -m pytest -q -m deployment tests/deployment/test_distributed.py

# Unit, integration, emulator and `airflow dags test` suites on another Airflow (no browser: the 2.11 UI is
# another application; tests/deployment targets the current Airflow only).
.venv%/.installed: pyproject.toml $(wildcard constraints/*.txt)
	@test -x .venv$*/bin/python || $(PYTHON) -m venv .venv$*
	.venv$*/bin/python -m pip install --quiet --disable-pip-version-check $(AIRFLOW_PINS_$(VERSION_OF_$*)) -e ".[test]"
	@touch $@

$(foreach v,$(OTHER_AIRFLOWS),$(eval VERSION_OF_$(subst .,,$(v)) := $(v)))

# TEST_MARKS picks the tests (for example TEST_MARKS="not browser and not airflow": no `airflow dags test` runs).
TEST_MARKS ?= not browser
test-airflow-%:
	$(MAKE) .venv$(subst .,,$*)/.installed
	.venv$(subst .,,$*)/bin/python $(PYTEST) -m "$(TEST_MARKS)" tests --ignore=tests/browser --ignore=tests/deployment \
		-p no:cacheprovider

# Event-driven runs on Airflow 3.1 (the watcher's record in a Variable, ack slots) under 3.1.8's real scheduler,
# dag-processor and triggerer: the bursts and the triggerer killed mid-burst of tests/deployment/test_embedded_airflow31.py
# (embedded, PostgreSQL when reachable; one deployment, 6 tests, 6 to 9 minutes here). CI runs it after test-airflow-3.1.
test-deployment-3.1:
	$(MAKE) .venv31/.installed
	.venv31/bin/python -m pytest -q -p no:cacheprovider tests/deployment/test_embedded_airflow31.py

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
	rm -rf $(VENV) $(addprefix .venv,$(subst .,,$(OTHER_AIRFLOWS))) .demo dist build .pytest_cache .mypy_cache .ruff_cache tests/output
