# The two commands: `make demo` and `make test`. Both bootstrap .venv from nothing but Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE := $(VENV)/.core
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test bench gpu-check clean

setup: $(STAMP)

# The demo needs only the package's own dependencies. --no-compile: Python writes the bytecode of
# what is imported on first use instead of all of torch's at install time (~35 s less on 2 cores).
$(CORE): constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -c constraints.txt -e .
	touch $(CORE)

# Tests, export, lm-eval and datatrove on top (requirements.txt).
$(STAMP): $(CORE) requirements.txt
	$(PY) -m pip install --quiet --no-compile -r requirements.txt -c constraints.txt
	touch $(STAMP)

# STEPS=N: train N steps instead of configs/demo-proxy-bpe.yaml's run.max_steps.
# COMPARE=1: then train the byte-only model of the same FLOPs and print both on the same sets.
demo: $(CORE)
	$(PY) -m proxylm.demo $(if $(STEPS),--steps $(STEPS)) $(if $(filter-out 0,$(COMPARE)),--compare-bytes)

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
