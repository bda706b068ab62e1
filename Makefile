# The two commands: `make demo` and `make test`. Both bootstrap .venv from nothing but Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test bench gpu-check clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# STEPS=N: train N steps instead of the demo's default (proxylm/demo.py DEMO_STEPS).
demo: $(STAMP)
	$(PY) -m proxylm.demo $(if $(STEPS),--steps $(STEPS))

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# On a GPU machine: installs the CUDA build of torch 2.13.0, runs the tests marked gpu, prints one
# table (scripts/gpu_check.py). DRY_RUN=1: the same checks on the CPU with tiny shapes, nothing installed.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
