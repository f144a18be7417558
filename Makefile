# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip install --disable-pip-version-check -q -c constraints.txt
RUN ?= runs/quick

.PHONY: demo test setup setup-dev browser clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/contrastlab study --preset quick --out $(RUN)

# Headless Chromium for the report's browser test (Debian package); the test skips with a
# visible reason where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
	  || echo "note: could not install chromium; the browser test will be skipped"; }

# pytest-xdist: one worker per logical CPU (2 on CI); whole modules per worker (their module-scoped fixtures
# run once), heaviest modules first (tests/conftest.py orders them). `pytest` alone runs serially.
TEST_WORKERS ?= logical

test: $(VENV)/.installed-dev browser
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) runs .pytest_cache
