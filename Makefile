# Set-up and entry points. `make demo` and `make test` do all set-up on a fresh machine, inside .venv:
# nothing here installs or starts anything system-wide (.ci/run does that for CI).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
# TORCH=cpu: a CPU-only torch/torchvision from PyTorch's CPU wheel index (laptops, CPU boxes; about a
# third of the default venv's size). Default: PyPI's torch (CUDA-enabled on Linux x86_64, for clusters).
TORCH ?= default
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Stamp file: re-install only when the package metadata or the pins change.
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format report clean-results

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(TORCH),cpu)
	@# the pins of constraints.txt (torch==X matches the CPU build X+cpu), from the CPU index first,
	@# so that the project install below finds torch satisfied and pulls no CUDA libraries
	$(BIN)/python -m pip install --quiet -c constraints.txt --index-url $(TORCH_CPU_INDEX) torch torchvision
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 'this .venv already holds a CUDA build of torch (' + torch.__version__ + '): remove .venv and run make install TORCH=cpu again')"
else ifneq ($(TORCH),default)
	$(error TORCH must be 'default' or 'cpu', got '$(TORCH)')
endif
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

## The main job: the offline demo sweep (config/config.yaml) and its report.
demo: install
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html
	@echo "demo finished: open results/pepr_report.html (the full report, rebuilt with the sweep); also results/report.html (Snakemake's report of this run), results/summary.md, results/pepr.csv"

## The whole test suite (lint, unit, CPU training smoke, end-to-end workflow; SLURM where its test
## cluster runs, see tests/slurm/start-slurm.sh).
test: lint
	$(BIN)/python -m pytest

## Lint and formatting check (ruff, configured in pyproject.toml); `make format` applies both fixes.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not slurm"

clean-results:
	rm -rf results resources .snakemake
