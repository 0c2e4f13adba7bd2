# Two commands for a newcomer:
#   make run    set up .venv, run the whole pipeline on the embedded default (offline), write the HTML report
#   make test   set up .venv, lint, and run the test suite
# Versioning with DVC (README, "Versioning data and models"):
#   make record   after a run: hash every artifact into dvc.lock and push them to the DVC remote
#   make restore  on a fresh clone: pull the recorded artifacts; Snakemake then has nothing to do
VENV ?= .venv
PYTHON_BASE ?= python3
BIN := $(VENV)/bin
# Nothing in the default run or the tests may reach the Hugging Face Hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run report test lint clean record restore

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	$(PYTHON_BASE) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

run: setup
	$(BIN)/snakemake --cores all
	$(BIN)/snakemake --report results/report.html
	@echo "Report: results/*/report/report.md and results/report.html"

record: setup
	$(BIN)/python tools/dvc_pipeline.py record

restore: setup
	$(BIN)/python tools/dvc_pipeline.py restore

lint: setup
	$(BIN)/ruff check scripts tests benchmarks tools
	$(BIN)/ruff format --check scripts tests benchmarks tools
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

test: lint
	$(BIN)/pytest

clean:
	rm -rf results .snakemake
