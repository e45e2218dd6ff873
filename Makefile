# Two commands for a newcomer; both create the virtual environment on first use.
#   make repro   install (first time), then `dvc repro` the default pipeline
#   make test    install (first time), then run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: repro test bench install

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

repro: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH dvc repro

test: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q -rs

bench: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m benches
