# `make run` serves the API; `make cluster` serves it as it is deployed (PgBouncer, Redis, N
# instances, nginx); `make test` runs the whole suite, `make test-fast` the part that
# starts no process of its own. Each sets up .venv first:
# `make run` with what serving needs (requirements.txt), the tests with their packages too.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run cluster test test-fast migrate schema clean

run: $(VENV)/.installed
	$(BIN)/python run.py

# Also needs pgbouncer, redis-server and nginx (Debian: apt-get install pgbouncer redis-server nginx-light).
# CLUSTER_INSTANCES (or `make cluster CLUSTER_INSTANCES=2`) sets how many instances run.
cluster: $(VENV)/.installed
	$(BIN)/python -m devtools.local_cluster

# Two pytest-xdist workers, one per core, each with its own PostgreSQL; `-n 0` in
# PYTEST_ARGS runs the tests in one process (a later -n wins).
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# The tests not marked `server` (tests/conftest.py marks them): no gunicorn, no browser, no
# PostgreSQL but the session's, no subprocess; the Flask test client and the in-process stubs.
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 -m "not server" $(PYTEST_ARGS)

migrate: $(VENV)/.installed
	$(BIN)/python migrate.py

# schema.sql: the schema a new database has after every migration, on a throwaway
# PostgreSQL (the tests' packages start it). Run after adding a migration.
schema: $(VENV)/.installed-test
	$(BIN)/python -m devtools.schema_file

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	touch $@

# One stamp per file: editing either installs again what it lists.
$(VENV)/.installed: requirements.txt $(VENV)/.created
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(PIP) -r requirements-test.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
