# cabguard: the two commands are `make demo` and `make test` (see README.md).
# Every target sets up what it needs; a second run is quick (stamp files).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYDEPS := $(VENV)/.deps-stamp
JSDEPS := node_modules/.deps-stamp

.PHONY: setup demo test bench hil clean system

setup: $(PYDEPS) $(JSDEPS) system

# Debian packages the tests need: Mosquitto (a real broker on loopback).
system:
	@command -v mosquitto >/dev/null || command -v /usr/sbin/mosquitto >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }

$(PYDEPS): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# MicroPython (WebAssembly port) from the npm registry, run with Node.
$(JSDEPS): package.json package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup
	$(VENV)/bin/cabguard demo

test: setup
	$(PY) -m pytest

bench: setup
	$(VENV)/bin/cabguard bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache *.egg-info
