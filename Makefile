# Two commands do all the set-up on a fresh machine:
#   make run    -- create .venv, install, run the paper4-best pipeline (local Prefect, local Dask cluster, local Zarr store)
#   make test   -- create .venv, install, run the test suite (what CI runs)
# While developing:
#   make check  -- the linter and the fast tests (not those marked `system`: Prefect flow runs, Dask clusters): ~6 min
PYTHON ?= python3
VENV := .venv
CONFIG ?= paper4-best
OUT ?= runs/$(basename $(notdir $(CONFIG)))
# The real PhysioNet copy beside the checkout when there is one; else ./data/physionet (downloaded on first use).
DATA_DIR ?= $(if $(wildcard ../shared/data/physionet/mitdb/RECORDS),../shared/data/physionet,data/physionet)
# Downloading is never implicit: asked for only when the run uses ./data/physionet.
DOWNLOAD ?= $(if $(filter data/physionet,$(DATA_DIR)),--download,)

.PHONY: install run test check bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/ecgpipe run --config $(CONFIG) --data-dir $(DATA_DIR) --out $(OUT) $(DOWNLOAD)

test: install
	$(VENV)/bin/python -m pytest

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -m "not system" -q

bench: install
	$(VENV)/bin/python tests/benchmarks/bench_spectrograms.py --data-dir $(DATA_DIR)
	$(VENV)/bin/python tests/benchmarks/bench_features.py --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) runs .pytest_cache
