# The two commands of the README. Each creates .venv on first use and installs the package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One BLAS thread: on a 2-core machine the test modules and benchmarks run faster and steadier.
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo test lint test-notebooks test-exhaustive test-torch test-oldest figures bench clean \
	lab lab-setup lab-build

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The demo's figures go to build/figures (ignored by git): the committed figures/ stay as they
# are, whatever matplotlib draws on this machine. `make figures` rewrites the committed ones.
demo: $(VENV)/.installed
	$(PY) -m lowprec demo --out build/figures

# The fast lane: a few minutes on 2 cores. The notebooks and the whole demo are marked
# `notebooks` (pyproject's addopts leaves them out) and run in their own lane.
test: $(VENV)/.installed
	$(PY) -m pytest -q

# ruff's checks as configured in pyproject.toml ([tool.ruff]).
lint: $(VENV)/.installed
	$(PY) -m ruff check lowprec tests benchmarks

# Every lab notebook (solutions pass every check, student versions run unanswered) and the demo.
test-notebooks: $(VENV)/.installed
	$(PY) -m pytest -q -m notebooks

# The lab kit. `make lab-setup` installs JupyterLab (the [lab] extra) into the venv, registers
# the venv as a Jupyter kernel named "lowprec" and rebuilds the student notebooks; `make lab`
# then starts JupyterLab on notebooks/ (it prints the URL). LAB_SOURCE is the pip requirement
# the notebooks' first cell installs where lowprec is missing (Colab); see notebooks/INSTRUCTORS.md.
LAB_SOURCE ?=
LAB_OUT ?= notebooks/student
KERNEL_INSTALL_ARGS ?= --user
$(VENV)/.lab-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[lab]'
	touch $@

lab-setup: $(VENV)/.lab-installed
	$(PY) -m ipykernel install $(KERNEL_INSTALL_ARGS) --name lowprec --display-name "Python (lowprec)"
	$(PY) -m lowprec lab build --out $(LAB_OUT) --source "$(LAB_SOURCE)"

lab-build: $(VENV)/.installed
	$(PY) -m lowprec lab build --out $(LAB_OUT) --source "$(LAB_SOURCE)"

# jupyter refuses to run as root unless told; root is common in containers (docker, some CI).
LAB_ARGS ?= $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
lab: lab-setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

# Every float32 input for the 8- and 16-bit targets: about 13 min on 2 idle cores, 18 on loaded
# ones; LOWPREC_TEST_WORKERS sets the number of processes (default 2).
test-exhaustive: $(VENV)/.installed
	$(PY) -m pytest -q -m exhaustive

# The fast suite on the oldest releases pyproject.toml allows (numpy, ml_dtypes, matplotlib:
# .ci/oldest-constraints.txt), in a venv of their own; Python 3.10 where `python3.10` runs.
OLDEST_VENV := .venv-oldest
OLDEST_PYTHON ?= $(shell python3.10 -c '' 2>/dev/null && echo python3.10 || echo $(PYTHON))
$(OLDEST_VENV)/.installed: pyproject.toml .ci/oldest-constraints.txt
	rm -rf $(OLDEST_VENV)
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -c .ci/oldest-constraints.txt -e '.[test]'
	touch $@

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(numpy|ml.dtypes|matplotlib) '
	$(OLDEST_VENV)/bin/python -m pytest -q -p no:cacheprovider

# Optional cross-checks against PyTorch's CPU build.
test-torch: $(VENV)/.installed
	$(PY) -m pip install --quiet torch==2.13.0 torchao==0.18.0
	$(PY) -m pytest -q -m torch

figures: $(VENV)/.installed
	$(PY) -m lowprec figures --out figures

bench: $(VENV)/.installed
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(OLDEST_VENV) build *.egg-info
