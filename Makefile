# `make run` serves the API; `make test` runs the whole suite. Both set up .venv first:
# `make run` with what serving needs (requirements.txt), `make test` with the tests' packages too.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run test migrate schema clean

run: $(VENV)/.installed
	$(BIN)/python run.py

# Two pytest-xdist workers, one per core, each with its own PostgreSQL; `-n 0` in
# PYTEST_ARGS runs the tests in one process (a later -n wins).
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

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
