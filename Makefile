# Daily commands. `make run` and `make test` set up everything they need on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo drill screens test test-fast lint typecheck firmware bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fleet-tui demo

# The bad-canary drill (README: "Walk-through"): 2.4.0 crash-loops on rev-b.
drill: $(STAMP)
	$(BIN)/fleet-tui demo --scenario bad-canary

# The README's screenshots, from the snapshot tests (seeded data, fixed clock).
screens: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/tui/test_rollout_snapshots.py --snapshot-update
	$(BIN)/python scripts/render_screens.py

system-deps:
	./scripts/system-deps.sh

firmware: system-deps
	./firmware/build.sh

lint: $(STAMP)
	$(BIN)/ruff check fleet_tui tests bench

typecheck: $(STAMP)
	$(BIN)/mypy fleet_tui

# The whole suite: lint, types, the firmware host build and its unit tests, then pytest
# (unit, hypothesis, SQLite + PostgreSQL registry, real mosquitto, real firmware binary).
# Two xdist workers: most tests wait on brokers, devices and apps settling, so two
# processes on two cores cut the wall time by about a third; every test starts its own
# mosquitto on a free port and its own database, so they do not share state.
test: $(STAMP) system-deps lint typecheck firmware
	$(BIN)/pytest -q -p no:cacheprovider --timeout=600 -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/pytest -q -x tests/unit

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) firmware/build .pytest_cache .mypy_cache .ruff_cache .hypothesis
