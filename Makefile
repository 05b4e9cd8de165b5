# backup_exporter: `make demo` runs the simulated homelab, `make test` runs every quality gate.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS   := prometheus prometheus-alertmanager chromium

.PHONY: all venv debs lint test pytest demo bench dashboards clean fuzz soak

all: test

# One venv; .installed-test has the [test] extra (which includes [demo]), .installed-demo [demo].
$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$*]'
	touch $@

venv: $(VENV)/.installed-test

# The tests drive the real Debian binaries (promtool, prometheus, alertmanager, amtool, chromium).
debs:
	@if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
	    || ! command -v amtool >/dev/null || ! command -v chromium >/dev/null; then \
	  echo "installing Debian packages: $(DEBS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(DEBS); \
	fi

lint: venv
	$(BIN)/ruff check exporter tests dashboards bench
	$(BIN)/ruff format --check exporter tests dashboards bench
	$(BIN)/mypy

pytest: venv debs
	$(BIN)/python -m pytest -q

test: venv debs lint pytest

# The reliability suite's long runs (the short ones are part of `make test`).
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/reliability/test_fuzz.py

soak: venv
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(BIN)/python -m pytest -q -s tests/reliability/test_soak.py

demo: $(VENV)/.installed-demo
	$(BIN)/backup-exporter demo

bench: venv
	$(BIN)/python bench/bucket_memory.py
	$(BIN)/python bench/scrape_latency.py

dashboards: venv
	$(BIN)/python dashboards/generate.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
