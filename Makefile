# `make run` serves the API; `make test` runs the whole suite. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test migrate clean

run: $(VENV)/.installed
	$(BIN)/python run.py

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

migrate: $(VENV)/.installed
	$(BIN)/python migrate.py

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
