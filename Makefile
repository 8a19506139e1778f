# Two entry points: `make demo` (train on real data, print the per-domain table) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -c "from mdctr.nn import native; native.segment_lora()"  # compiled kernels, ~20 s once
	touch $(STAMP)

demo: install
	$(BIN)/mdctr data fetch movielens-1m
	$(BIN)/mdctr train configs/ml1m-gender.yaml --out runs/demo-ml1m-gender --overwrite

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs
