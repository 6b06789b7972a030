# cabguard: the two commands are `make demo` and `make test` (see README.md).
# Every target sets up what it needs; a second run is quick (stamp files).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYDEPS := $(VENV)/.deps-stamp
JSDEPS := node_modules/.deps-stamp

.PHONY: setup demo test bench soak hil clean system

setup: $(PYDEPS) $(JSDEPS) system

# Debian packages the tests need: Mosquitto (a real broker on loopback),
# shellcheck (flash.sh must stay clean), PostgreSQL (the head end's shared store;
# the tests start their own server on a private port and data folder), a C
# compiler (the soak steps the gateway's wall clock as NTP does:
# simulator/wallstep.c), oathtool (TOTP codes in the docs' walkthrough, as an
# authenticator app makes them).
system:
	@command -v mosquitto >/dev/null || command -v /usr/sbin/mosquitto >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }
	@command -v shellcheck >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
	@command -v cc >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null; }
	@command -v oathtool >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq oathtool >/dev/null; }

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

# The unit tests and the HIL suite against a flashed gateway (docs/flashing.md),
# on TEST_WORKERS pytest-xdist workers: most long tests wait on real processes
# (the soak, the flashed gateway), so two workers on two cores finish in about
# half the time.  `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) tests hil_tests

# The HIL suite alone; on a bench: make hil HIL_ARGS="--bench-config bench.toml"
hil: setup
	$(PY) -m pytest hil_tests $(HIL_ARGS)

# Figures, then the 10-minute soaks of the real gateway (docs/runtime.md), disarmed and armed.
bench: setup
	$(VENV)/bin/cabguard bench
	$(VENV)/bin/cabguard soak --minutes 10
	$(VENV)/bin/cabguard soak --minutes 10 --armed

# The real gateway against the simulator for as long as asked: make soak MINUTES=60 [SOAK_ARGS=--armed]
MINUTES ?= 10
soak: setup
	$(VENV)/bin/cabguard soak --minutes $(MINUTES) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache *.egg-info
