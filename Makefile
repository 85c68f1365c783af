# The two commands of the README. Both start from nothing: scripts/setup installs what is
# missing, and the project starts its own Kafka and PostgreSQL unless told where they are.
.PHONY: up test lint unit setup

setup:
	@scripts/setup

up: setup
	.venv/bin/caravan up --demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy .

# Test sessions side by side (pytest-xdist workers, each its own Kafka and PostgreSQL:
# docs/developing.md); CARAVAN_TEST_WORKERS=0 runs them all in one process.
CARAVAN_TEST_WORKERS ?= 3

test: lint
	.venv/bin/python -m pytest -p no:cacheprovider -n $(CARAVAN_TEST_WORKERS) --durations=30  # the slowest named: keep the suite short

unit: setup
	.venv/bin/python -m pytest -p no:cacheprovider tests/unit
