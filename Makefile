# The verbs people type. Everything runs from a local virtualenv that `make` creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit docs monitoring venv bench bench-smoke clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: venv
	$(BIN)/python samples/demo.py

# lint-imports: the layering and the absence of import cycles (contracts in pyproject.toml).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# Every test with branch coverage and its threshold (pyproject.toml, [tool.coverage]), but the
# flow-control simulations: pure Python on a fake clock, four times slower under a tracer
# (3 minutes of CI time), they run untraced after the others.
SIMULATIONS := $(wildcard tests/unit/flow/test_flow_collapse.py tests/unit/flow/test_flow_noise.py \
	tests/unit/flow/test_flow_noise_matrix.py tests/unit/flow/test_flow_simulation.py \
	tests/unit/flow/test_flow_stalls.py)

unit: venv
	$(BIN)/python -m pytest --cov --cov-report=term $(SIMULATIONS:%=--ignore=%)
	$(BIN)/python -m pytest $(SIMULATIONS)

# The documentation site, built strictly (a broken link or anchor fails) into site/; its
# reference pages are generated from the code (docs/hooks/reference.py).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The alert rules that ship (config/monitoring/): valid, and their tests pass (Debian's
# prometheus package has promtool).
monitoring:
	promtool check rules config/monitoring/alerts.yml
	promtool test rules config/monitoring/alerts_test.yml

test: lint typecheck docs monitoring unit

# The benchmark suite: ratios against baselines measured in the same run (a few minutes).
bench: venv
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

# The same scenarios at tiny sizes, in seconds: checks the benchmark code, not performance.
bench-smoke: venv
	$(BIN)/python -m bench --smoke

# What the documentation's sessions leave in the repository's root (ledgers of the fake API, reports,
# the nightly script) goes too, so a clean tree is clean.
RECIPE_FILES := backfill.sqlite3* backfill.json nightly.sh nightly.sqlite3* nightly.log reports \
	fix.sqlite3* fix.csv queue.sqlite3* night2.json night2.prom nats.sqlite3* sqs.sqlite3*

clean:
	rm -rf $(VENV) demo-out site .mypy_cache .ruff_cache .pytest_cache .coverage $(RECIPE_FILES)
