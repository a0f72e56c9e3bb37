# Two entry points: `make app` opens the explorer, `make test` runs the whole suite.
# Both create .venv on first use. torch==2.13.0 (the CPU build) goes in first, so the
# range in pyproject.toml is already met and pip never resolves a CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PORT ?= 8501

.PHONY: setup app test test-fast bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

app: setup
	$(VENV)/bin/streamlit run apps/explorer.py --server.port $(PORT) --server.headless true

test: setup
	$(PY) -m pytest -n 2 -q

test-fast: setup
	$(PY) -m pytest -n 2 -q -m "not slow"

bench: setup
	$(PY) bench/hooks.py
