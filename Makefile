# One entry point for people and CI.  `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test bench clean

venv: $(BIN)/.installed

$(BIN)/.installed: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

demo: venv
	bin/demo

test: venv
	$(BIN)/python -m pytest

# The performance benchmark (prints a table, writes bench/results/run.json); e.g. make bench BENCH_ARGS="--scale 100"
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .data .pytest_cache
