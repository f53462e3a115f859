# stabnb: the two commands of the README, plus helpers for developers.
#   make reproduce   run every notebook headless (PROFILE=quick by default) and write the report
#   make test        the whole test suite: unit tests and the notebooks under nbval (smoke profile)
#   make lab         JupyterLab on the tour, with the same data settings (STABNB_DOWNLOAD=1 to download)
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

.PHONY: reproduce test lab bench notebooks clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

reproduce: $(VENV)/.installed
	$(BIN)/python -m stabnb reproduce --profile $(PROFILE) --device $(DEVICE) $(if $(JOBS),--jobs $(JOBS))

test: $(VENV)/.installed
	STABNB_PROFILE=smoke STABNB_PROGRESS=0 MPLBACKEND=Agg PYTHONHASHSEED=0 \
		$(BIN)/python -m pytest -n $(or $(JOBS),2) --dist loadfile --nbval-lax tests notebooks

lab: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks/00_tour.ipynb

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py

# Re-execute every notebook at the smoke profile in place: the outputs nbval compares.
notebooks: $(VENV)/.installed
	STABNB_PROFILE=smoke STABNB_PROGRESS=0 MPLBACKEND=Agg $(BIN)/jupyter nbconvert --to notebook \
		--execute --inplace --ExecutePreprocessor.record_timing=False notebooks/*.ipynb notebooks/*/*.ipynb

clean:
	rm -rf $(VENV) runs/smoke figures/smoke .pytest_cache
