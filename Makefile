# One entry point for people and CI.  `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: venv demo ui test bench clean

venv: $(BIN)/.installed

# The project itself goes in editable (no deps: requirements.txt pins them), so `backupctl` is on
# the venv's PATH, Airflow finds the rclone provider, and the checkout's code is what runs.
$(BIN)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: venv
	bin/demo

# Airflow's UI on the demo's home (.data/airflow): prints the URL and the admin password; Ctrl-C stops it.
ui: venv
	bin/ui

test: venv
	$(BIN)/python -m pytest

# The performance benchmark (prints a table, writes bench/results/run.json); e.g. make bench BENCH_ARGS="--scale 100"
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .data .pytest_cache
