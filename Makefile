# stabnb: the two commands of the README, plus helpers for developers.
#   make reproduce   run every notebook headless (PROFILE=quick by default) and write the report
#   make test        the whole test suite: unit tests, the cheap notebooks under nbval (quick, against
#                    their published outputs), the study notebooks at smoke (tests/reference)
#   make lab         JupyterLab on the tour, with the same data settings (STABNB_DOWNLOAD=1 to download)
#   make gpu-bundle  .gpu/ (wheels and data) for .ci/gpu-paper, the paper profile on a bare GPU machine
# Each creates or reuses the virtual environment in $(VENV) and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= quick
DEVICE ?= auto
JOBS ?=
# Offline copies of MNIST/CIFAR-10: used when ../shared/data exists; override or unset as you like.
STABNB_OFFLINE_DATA ?= $(if $(wildcard ../shared/data/SHA256SUMS),$(abspath ../shared/data))
export STABNB_OFFLINE_DATA

.PHONY: reproduce test lab bench readme publish smoke-reference gpu-bundle clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m pip install --quiet --no-deps 'torchattacks>=3.5'
	touch $@

reproduce: $(VENV)/.installed
	$(BIN)/python -m stabnb reproduce --profile $(PROFILE) --device $(DEVICE) $(if $(JOBS),--jobs $(JOBS))

test: $(VENV)/.installed
	STABNB_PROFILE=quick STABNB_PROGRESS=0 MPLBACKEND=Agg PYTHONHASHSEED=0 OMP_NUM_THREADS=1 \
		$(BIN)/python -m pytest -n $(or $(JOBS),2) --dist loadfile --nbval-lax --doctest-modules stabnb tests notebooks

lab: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks/00_tour.ipynb

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py

# Regenerate the README's results table from results/$(PROFILE)/claims.json.
readme: $(VENV)/.installed
	$(BIN)/python -c "from stabnb.reproduce.render import update_readme; update_readme('README.md', 'results/$(PROFILE)/claims.json')"

# Rewrite the smoke claims of the study notebooks that the tests compare (after a deliberate change).
smoke-reference: $(VENV)/.installed
	STABNB_PROGRESS=0 MPLBACKEND=Agg OMP_NUM_THREADS=1 PYTHONHASHSEED=0 $(BIN)/python -c "from stabnb.reproduce.reference import write_smoke_reference; write_smoke_reference('notebooks', 'tests/reference/smoke_claims.json')"

# Copy the notebooks executed by `make reproduce` (runs/$(PROFILE)) onto notebooks/: real outputs.
publish: $(VENV)/.installed
	$(BIN)/python -c "from stabnb.reproduce.publish import publish_notebooks; print(*publish_notebooks('runs/$(PROFILE)/', 'notebooks'), sep='\n')"

# .gpu/ for the GPU machine's one command, .ci/gpu-paper: wheels for its Python 3.12, the data.
gpu-bundle: $(VENV)/.installed
	PIP="$(BIN)/python -m pip" .ci/gpu-bundle

clean:
	rm -rf $(VENV) runs/smoke runs/scratch figures/smoke .pytest_cache
