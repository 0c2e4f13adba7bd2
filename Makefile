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

.PHONY: setup lock run report test lint clean record restore

setup: $(VENV)/.installed

# The environment, installed only from the lockfiles, every file checked against its hash. requirements-dev.txt
# is the runtime lock (requirements.txt) plus the optional trackers and the development tools. --no-deps: a
# lockfile is the whole closure already (uv resolved it), and pip would take a dependency with an extra, such
# as typepy[datetime], for an unpinned requirement; requirements-nodeps.txt must not bring its dependencies.
$(VENV)/.installed: requirements-dev.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON_BASE) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-dev.txt -r requirements-nodeps.txt
	# The shared code (src/alpaca_lora), editable: the steps, tests and benchmarks import it.
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The one place the lockfiles are made: after changing a pin in pyproject.toml (or requirements-nodeps.in),
# run `make lock`, then `make setup`. For Linux x86_64 and Python 3.11, with torch's CPU build, found through
# pip's find-links (FIND_LINKS=<folder or URL> where that is elsewhere). The runtime lock is resolved within
# the dev lock, so that both pin the same versions (tests/test_environment.py checks the three files).
UV ?= $(BIN)/uv
FIND_LINKS ?= $(PIP_FIND_LINKS)
# Hashes, the Python version and the header: [tool.uv.pip] in pyproject.toml.
UV_COMPILE = $(UV) pip compile --quiet $(if $(FIND_LINKS),--find-links $(FIND_LINKS))

lock: setup
	$(UV_COMPILE) pyproject.toml --extra trackers --extra dev -o requirements-dev.txt
	$(UV_COMPILE) pyproject.toml --constraint requirements-dev.txt -o requirements.txt
	$(UV_COMPILE) requirements-nodeps.in --no-deps -o requirements-nodeps.txt

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
	$(BIN)/python tools/snakemake_lint.py

# The report's browser tests (marked `browser`) render the HTML report in Debian's headless chromium, which
# tests/browser/install.sh installs when missing (root and apt, as in CI). SKIP_BROWSER=1 leaves them out.
# The SLURM tests (tests/test_slurm.py) run on a real one-node cluster that tests/slurm/harness.sh installs,
# starts, and stops and uninstalls again afterwards; that needs root, as in CI. SKIP_SLURM=1 leaves them out.
# The sandbox's namespace tests need bubblewrap, which tests/sandbox/install-bubblewrap.sh installs as root.
# The modules run on TEST_WORKERS processes at once (pytest-xdist; a module stays on one worker, and
# tests/conftest.py starts the longest first). Three keep both cores of a 2-core machine busy while the SLURM
# module mostly waits on its jobs; each test process computes on one thread, so that workers do not
# oversubscribe the cores. TEST_WORKERS=1 runs them one after the other.
TEST_WORKERS ?= 3
PYTEST := $(BIN)/pytest --numprocesses $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: export OMP_NUM_THREADS := 1
test: export BROWSER_TESTS := $(if $(filter 1,$(SKIP_BROWSER)),skip,required)
test: lint
	tests/sandbox/install-bubblewrap.sh
ifneq ($(SKIP_BROWSER),1)
	tests/browser/install.sh
endif
ifeq ($(SKIP_SLURM),1)
	$(PYTEST) -m "not slurm"
	@echo "SKIP_SLURM=1: the SLURM tests did not run"
else
	SLURM_TESTS=required tests/slurm/harness.sh run --timeout 3600 -- $(PYTEST)
endif

clean:
	rm -rf results .snakemake
