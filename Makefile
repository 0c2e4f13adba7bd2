# Two commands for a newcomer:
#   make run    set up .venv, run the whole pipeline on the embedded default (offline), write the HTML report
#   make test   set up .venv, lint, and run the test suite (the SLURM part as root: see the test target)
# Versioning with DVC (docs/versioning.md):
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

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON_BASE) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	# The shared code (src/alpaca_lora), editable: the steps, tests and benchmarks import it.
	$(BIN)/python -m pip install --quiet --no-deps -e .
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
	$(BIN)/ruff check src scripts tests benchmarks tools
	$(BIN)/ruff format --check src scripts tests benchmarks tools
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

# The report's browser tests (marked `browser`) render the HTML report in Debian's headless chromium, which
# tests/browser/install.sh installs when missing (root and apt, as in CI). SKIP_BROWSER=1 leaves them out.
# The SLURM tests (tests/test_slurm.py) run on a real one-node cluster that tests/slurm/harness.sh installs,
# starts, and stops and uninstalls again afterwards; that needs root, as in CI. SKIP_SLURM=1 leaves them out.
# The sandbox's namespace tests need bubblewrap, which tests/sandbox/install-bubblewrap.sh installs as root.
test: lint
	tests/sandbox/install-bubblewrap.sh
ifeq ($(SKIP_BROWSER),1)
	BROWSER_TESTS=skip $(BIN)/pytest -m "not slurm"
else
	tests/browser/install.sh
	BROWSER_TESTS=required $(BIN)/pytest -m "not slurm"
endif
ifeq ($(SKIP_SLURM),1)
	@echo "SKIP_SLURM=1: the SLURM tests did not run"
else
	SLURM_TESTS=required tests/slurm/harness.sh run --timeout 2400 -- $(BIN)/pytest -m slurm
endif

clean:
	rm -rf results .snakemake
