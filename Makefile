# backup_exporter: `make demo` runs the simulated homelab, `make test` runs every quality gate.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all venv debs lint test pytest demo bench dashboards report-example k8s-rules fuzz soak clean

all: test

# One venv; .installed-test has the [test] extra (which includes [demo]), .installed-demo [demo].
$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$*]'
	touch $@

venv: $(VENV)/.installed-test

# The tests drive the real Debian binaries (promtool, prometheus, alertmanager, amtool, chromium;
# docker-compose only validates deploy/compose/compose.yaml, no engine runs; systemd-analyze
# checks the unit; openssl makes the compose stack's certificates). command:package pairs;
# only the packages of missing commands are installed (nothing already there is upgraded).
DEB_COMMANDS := promtool:prometheus prometheus:prometheus \
	prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager \
	chromium:chromium docker-compose:docker-compose systemd-analyze:systemd openssl:openssl
debs:
	@missing=$$(for pair in $(DEB_COMMANDS); do \
	  command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done | sort -u | tr '\n' ' '); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: venv
	$(BIN)/ruff check exporter tests dashboards bench deploy
	$(BIN)/ruff format --check exporter tests dashboards bench deploy
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

# Installs its own peers (rclone from Debian, prometheus-pve-exporter into bench/.venv-peer);
# `make bench BENCH_ARGS=--quick` for shorter runs. Never part of `make test`.
bench: venv
	$(BIN)/python bench/bucket_memory.py
	$(BIN)/python bench/run.py $(BENCH_ARGS)

dashboards: venv
	$(BIN)/python dashboards/generate.py

# The simulated homelab's living strategy report, checked in as an example.
report-example: venv
	$(BIN)/python -m exporter.sim.example_report docs/examples/report.md

# deploy/kubernetes/prometheusrule.yaml from alerts/*.rules.yml (tests/test_kubernetes.py checks it).
k8s-rules: venv
	$(BIN)/python deploy/kubernetes/generate_rules.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
