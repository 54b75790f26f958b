# The two front-door commands: `make demo` and `make test`. Both create .venv when
# missing and reinstall only when pyproject.toml changed (the stamp file).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format benchmarks clean postgres lock

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements.lock | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# After a change of pyproject.toml's dependencies: install without the lock, then freeze.
lock: | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	{ head -2 requirements.lock; $(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/loopline demo

# Two workers: tests sharing a session server stay on one (xdist groups, tests/conftest.py).
test: $(STAMP) postgres
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

benchmarks: $(STAMP)
	$(PY) -m benchmarks.train_overhead
	$(PY) -m benchmarks.orchestration --training
	$(PY) -m benchmarks.serving
	$(PY) -m benchmarks.drift
	$(PY) -m benchmarks.cli_latency

# The tests start a real PostgreSQL server; Debian's package provides initdb and postgres
# (off PATH, under /usr/lib/postgresql). Installed here when missing and we are root (CI).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) ; } || \
	  echo "PostgreSQL is not installed: its tests will be skipped (apt-get install postgresql)"

clean:
	rm -rf .loopline .pytest_cache
