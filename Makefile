# The two commands of the README. Each creates .venv on first use and installs the package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One BLAS thread: on a 2-core machine the test modules and benchmarks run faster and steadier.
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo test test-exhaustive test-torch figures bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m lowprec demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Every float32 input for the 8- and 16-bit targets: about 13 min on 2 idle cores, 18 on loaded
# ones; LOWPREC_TEST_WORKERS sets the number of processes (default 2).
test-exhaustive: $(VENV)/.installed
	$(PY) -m pytest -q -m exhaustive

# Optional cross-checks against PyTorch's CPU build.
test-torch: $(VENV)/.installed
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pytest -q -m torch

figures: $(VENV)/.installed
	$(PY) -m lowprec figures

bench: $(VENV)/.installed
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
