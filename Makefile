# Two commands do all the set-up on a fresh machine:
#   make run    -- create .venv, install, run the paper4 pipeline (local Prefect, local Dask cluster, local Zarr store)
#   make test   -- create .venv, install, run the test suite
PYTHON ?= python3
VENV := .venv
CONFIG ?= paper4
OUT ?= runs/$(CONFIG)
# The real PhysioNet copy beside the checkout when there is one; else ./data/physionet (downloaded on first use).
DATA_DIR ?= $(if $(wildcard ../shared/data/physionet/mitdb/RECORDS),../shared/data/physionet,data/physionet)

.PHONY: install run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/ecgpipe run --config $(CONFIG) --data-dir $(DATA_DIR) --out $(OUT)

test: install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python tests/benchmarks/bench_spectrograms.py --data-dir $(DATA_DIR)
	$(VENV)/bin/python tests/benchmarks/bench_features.py --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) runs .pytest_cache
