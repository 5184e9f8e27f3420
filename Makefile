# geopush: `make run` starts the whole local stack; `make test` runs every test.
# Both install what is missing first (a venv in .venv, Debian packages, the Kafka jars).
VENV ?= .venv
PY := $(VENV)/bin/python
GEOPUSH := $(VENV)/bin/geopush
STAMP := $(VENV)/.installed

.PHONY: install system run test unit lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

system:
	@bash scripts/system-packages.sh

install: system $(STAMP)
	@$(GEOPUSH) kafka fetch

run: install
	$(GEOPUSH) dev

test: install
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: install
	$(PY) -m bench.index_bench

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
