# Everything the project needs is installed from its own files: uv.lock for Python,
# scripts/system-deps.sh for the Debian packages the tests use (Chromium, PostgreSQL).
UV_VERSION := 0.13.8
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv

.PHONY: setup demo test lint bench clean

$(UV):
	$(PYTHON) -m pip install --quiet --user "uv==$(UV_VERSION)" || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"

# Bytecode is compiled at install, the project's own packages too: without it (uv's
# default, and PYTHONDONTWRITEBYTECODE is set on some machines) every command recompiles
# its imports, ~2 s per start here (~0.8 s of it the project's modules).
$(VENV)/.installed: pyproject.toml uv.lock Makefile | $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode
	$(VENV)/bin/python -m compileall -q -j 0 features models pipelines
	touch $@

setup: $(VENV)/.installed

## demo: generate data, run the nightly flow end to end, print where the outputs are
demo: setup
	$(VENV)/bin/leadscore demo

## test: install system test dependencies if missing, then run the whole suite on
## $(TEST_WORKERS) pytest-xdist workers; whole modules go to one worker (--dist loadfile),
## so module fixtures are built once; each worker has its own session fixtures and servers.
## Modules go out in the order tests/conftest.py sets (heavy ones first), not xdist's
## most-tests-first (--no-loadscope-reorder); the log ends with the 25 slowest tests.
TEST_WORKERS ?= 2
test: setup
	bash scripts/system-deps.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(VENV)/bin/python benchmarks/features.py
	$(VENV)/bin/python benchmarks/scoring.py

clean:
	rm -rf output data .pytest_cache
