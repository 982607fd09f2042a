# `make run` serves the API; `make test` runs the whole suite. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test migrate clean

run: $(VENV)/.installed
	$(BIN)/python run.py

# Two pytest-xdist workers, one per core, each with its own PostgreSQL; `-n 0` in
# PYTEST_ARGS runs the tests in one process (a later -n wins).
test: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

migrate: $(VENV)/.installed
	$(BIN)/python migrate.py

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
