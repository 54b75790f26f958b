# The two front-door commands: `make demo` and `make test`. Both create .venv when
# missing and reinstall only when pyproject.toml changed (the stamp file).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins packaging<24, which breaks Ray: it gets a virtual environment of its own.
CHECKOV := .venv-checkov/bin/checkov

.PHONY: install demo test test-fast lint format docs benchmarks clean postgres kubectl sandbox prometheus browser lock

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
test: $(STAMP) postgres kubectl sandbox prometheus browser $(CHECKOV)
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The manual (docs/, MkDocs); `make test` builds it too, in strict mode.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

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

# Submitted components are checked in a sandbox: bubblewrap (namespaces), strace (what
# the import did, seen from outside) and prlimit (util-linux, already there).
sandbox:
	@{ command -v bwrap && command -v strace; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap strace >/dev/null) ; } || \
	  echo "bubblewrap or strace is not installed: component checks will refuse to run (apt-get install bubblewrap strace)"

# The alert rules are checked and unit-tested by Prometheus' own promtool, their routes by
# Alertmanager's amtool (tests/infra), and both run for real in tests/serving.
prometheus:
	@{ command -v promtool && command -v amtool; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null) ; } || \
	  echo "prometheus or prometheus-alertmanager is not installed: the alerting tests will be skipped (apt-get install prometheus prometheus-alertmanager)"

# The pages an operator opens are checked in Debian's headless chromium (Playwright drives
# it; Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) ; } || \
	  echo "chromium is not installed: the browser tests will be skipped (apt-get install chromium)"

# kubectl renders the Kubernetes overlays (its built-in kustomize) in tests/infra.
kubectl:
	@command -v kubectl >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null) ; } || \
	  echo "kubectl is not installed: the manifest tests will be skipped (apt-get install kubectl)"

$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q 'checkov==3.3.*'

clean:
	rm -rf .loopline .pytest_cache site
