# geopush: `make run` starts the whole local stack; `make test` runs every test.
# Both install what is missing first (a venv in .venv, Debian packages, the Kafka jars).
VENV ?= .venv
PY := $(VENV)/bin/python
GEOPUSH := $(VENV)/bin/geopush
STAMP := $(VENV)/.installed
# the hot path compiled with mypyc (geofences/native.py says which modules, and when they are used)
NATIVE := build/native/.built
NATIVE_SRC := $(wildcard decisions/*.py geofences/*.py) scripts/native.py
# the fence-matching kernel, Rust (kernel/; scripts/kernel.sh skips it where cargo is missing)
KERNEL := build/kernel/.built
KERNEL_SRC := $(wildcard kernel/src/*.rs) kernel/Cargo.toml kernel/Cargo.lock scripts/kernel.sh

.PHONY: install system native kernel run test unit lint bench clean

$(STAMP): pyproject.toml constraints.txt decisions/__init__.py geofences/__init__.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

system:
	@bash scripts/system-packages.sh

$(NATIVE): $(STAMP) $(NATIVE_SRC)
	$(PY) scripts/native.py >build-native.log 2>&1 || { tail -20 build-native.log; exit 1; }
	@rm -f build-native.log
	@mkdir -p $(dir $@) && touch $@

native: $(NATIVE)

$(KERNEL): $(KERNEL_SRC)
	bash scripts/kernel.sh
	@mkdir -p $(dir $@) && if [ -f geofences/_kernel.abi3.so ]; then touch $@; fi

kernel: $(KERNEL)

install: system $(STAMP) $(NATIVE) $(KERNEL)
	@$(GEOPUSH) kafka fetch

run: install
	$(GEOPUSH) dev

test: install
	$(PY) -m ruff check .
	$(PY) -m mypy
	@if [ -f geofences/_kernel.abi3.so ]; then bash scripts/kernel.sh --test; fi
	$(PY) -m pytest

unit: $(STAMP) $(NATIVE) $(KERNEL)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: install
	$(PY) -m bench.index_bench

clean:
	rm -rf var build .pytest_cache .mypy_cache .ruff_cache
	rm -f decisions/*.so geofences/*.so
