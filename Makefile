# One entry point for people and CI.  `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test fuzz bench clean

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

# The randomized differential test at length: random operation sequences (not the derandomized few of
# `make test`), failures kept in tests/differential/.examples and replayed first.  E.g. make fuzz FUZZ_EXAMPLES=1000
# or FUZZ_SKIP=matviews,large_objects to switch operation families off.
FUZZ_EXAMPLES ?= 200
FUZZ_SKIP ?=
fuzz: venv
	PGBACKUP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PGBACKUP_FUZZ_SKIP=$(FUZZ_SKIP) \
		$(BIN)/python -m pytest tests/differential -s -p no:cacheprovider --hypothesis-show-statistics

# The performance benchmark (prints a table, writes bench/results/run.json); e.g. make bench BENCH_ARGS="--scale 100"
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .data .pytest_cache
