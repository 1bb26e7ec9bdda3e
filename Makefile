# medseg — install / demo / test / bench / lint
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One pin that resolves to the CPU wheel on CPU-only machines with a local wheelhouse and to the
# CUDA build from PyPI on Linux GPU machines. Override, e.g. TORCH_SPEC="torch==2.13.0 --index-url ...".
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= outputs/demo
export MPLBACKEND ?= Agg

.PHONY: install demo test bench gpu-check lint clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m medseg.cli.demo --out $(DEMO_DIR)

test: install
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: install
	$(PY) -m pip install -q -e ".[bench]"
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

gpu-check: install
	$(PY) benchmarks/gpu_check.py

lint: install
	$(VENV)/bin/ruff check medseg tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
