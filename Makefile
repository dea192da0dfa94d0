# Set-up and entry points. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
# Stamp file: re-install only when the package metadata or the pins change.
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast report clean-results

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

## The main job: the offline demo sweep (config/config.yaml) and its report.
demo: install
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/snakemake_report.html
	@echo "demo finished: see results/report.html (the answer), results/summary.md and results/snakemake_report.html"

## The whole test suite (unit, CPU training smoke, end-to-end workflow, SLURM).
test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not slurm"

clean-results:
	rm -rf results resources .snakemake
