# Two commands for a newcomer; both create the virtual environment on first use.
#   make repro      install (first time), then `dvc repro` the default pipeline
#   make test       install (first time), then lint (ruff) and run the whole test suite (CI runs this)
# For the inner loop:
#   make test-fast  lint and the unit tests only: no end-to-end run, no multi-process training
#   make browser    Debian's chromium for the Prefect UI test (tests/test_prefect_ui.py), when root;
#                   `make test` runs it first, and without a browser that test skips, saying why
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: repro test test-fast lint bench install browser

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

repro: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH dvc repro

lint: $(STAMP)
	$(VENV)/bin/ruff check .

browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	    >/dev/null) || echo "make browser: apt-get could not install chromium; the Prefect UI test will skip"; \
	else echo "make browser: no chromium and not root; the Prefect UI test will skip"; fi

test: lint browser
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q -rs --durations=15

test-fast: lint
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q -rs -m "not e2e and not slow"

bench: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m benches
