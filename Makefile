# One entry point for people and CI.  `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: venv demo ui test test-unit lint fuzz test-compose bench clean

venv: $(BIN)/.installed

# The project's venv: the runtime requirements with every pin (requirements.txt), the test tools
# (requirements-test.txt), then the project itself editable (no deps: the files above pin them), so
# `backupctl` is on the venv's PATH, Airflow finds the rclone provider, and the checkout's code is what runs.
$(BIN)/.installed: requirements.txt requirements-runtime.txt requirements-test.txt constraints.txt pyproject.toml samples/pyproject.toml harness/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt
	$(BIN)/pip install --quiet --no-deps -e . -e samples -e harness
	touch $@

demo: venv
	bin/demo

# Airflow's UI on the demo's home (.data/airflow): prints the URL and the admin password; Ctrl-C stops it.
ui: venv
	bin/ui

test: venv
	$(BIN)/python -m pytest

# The fast tier: tests that need no PostgreSQL, no Airflow subprocess and no network (marked `unit` by
# tests/conftest.py); seconds, not minutes.
test-unit: venv
	$(BIN)/python -m pytest -m unit -q

# ruff (lint and import order), then mypy (types), both configured in pyproject.toml; CI runs it before the tests.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# The randomized differential test at length: random operation sequences (not the derandomized few of
# `make test`), failures kept in tests/differential/.examples and replayed first.  E.g. make fuzz FUZZ_EXAMPLES=1000
# or FUZZ_SKIP=matviews,large_objects to switch operation families off.
FUZZ_EXAMPLES ?= 200
FUZZ_SKIP ?=
fuzz: venv
	PGBACKUP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PGBACKUP_FUZZ_SKIP=$(FUZZ_SKIP) \
		$(BIN)/python -m pytest tests/differential -s -p no:cacheprovider --hypothesis-show-statistics

# The docker compose stack for real (needs root: it starts dockerd; tests/compose/install-tools.sh installs
# the engine, debootstrap and compose v2 from Debian's archive).
test-compose: venv
	$(BIN)/python -m pytest tests/compose -m compose

# The performance benchmark (prints tables, writes bench/results/run.json); e.g. make bench BENCH_ARGS="--scales 30,100,300"
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .data .pytest_cache
