# autoballoon — the targets a contributor expects.
#   make demo      the daemon on the built-in simulated host, with its dashboard
#   make test      set up (packages when root, venv), lint, and run the whole suite
#   make lint      ruff (check and format) and mypy --strict on src/
#   make bench     simulator throughput, policy decision time, server overhead
#   make soak      the daemon on 1,000 simulated VMs for a simulated day with 20 HTTP clients
#   make evaluate  every policy on every scenario; writes docs/evaluation.md
#   make realbench every policy on real guests (root; about 20 min); writes docs/evaluation-real.md
#   make mechbench the reclaim mechanisms on real guests (root; 7 min); realbench then reports them
#   make prodbench every policy on production-like Debian guests (root; about 80 min under TCG)
#   make install   install on this Debian/Proxmox host (root): /opt/autoballoon, /usr/bin, the unit, config

PYTHON ?= python3
VENV ?= .venv
ifdef VIRTUAL_ENV
BIN := $(VIRTUAL_ENV)/bin
else
BIN := $(VENV)/bin
endif
PY := $(BIN)/python
STAMP := $(BIN)/.autoballoon

.PHONY: demo test lint bench soak evaluate realbench mechbench prodbench rig install clean help

help:
	@sed -n 's/^#   //p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP)-base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP)-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,eval,qmp]'
	touch $@

# libvirt-python compiles against libvirt-dev: only `make test` (which installs that) asks for it.
$(STAMP)-libvirt: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[libvirt]'
	touch $@

# The built-in simulated host (6 VMs, over-committed), 20x faster than life; Ctrl-C stops it.
DEMO_URI ?= sim:///demo?speed=20
DEMO_LISTEN ?= 127.0.0.1:9180
demo: $(STAMP)-base
	$(BIN)/autoballoon --connect '$(DEMO_URI)' run --table --listen $(DEMO_LISTEN)

rig:
	scripts/setup-rig

# A virtualenv of its own in /opt/autoballoon (Debian 12 refuses pip into the system Python), seeing
# Debian's python3-libvirt; /usr/bin/autoballoon, the unit and the example config. DESTDIR stages it.
install:
	scripts/install-host

# The lint runs first: CI (`.ci/run`) runs `make test`, so it checks the types and the format too.
test: rig $(STAMP)-test $(STAMP)-libvirt lint
	$(PY) -m pytest -q --durations=10

# mypy takes its files and settings from [tool.mypy] in pyproject.toml.
lint: $(STAMP)-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict

bench: $(STAMP)-test
	$(PY) bench/bench_sim.py
	$(PY) bench/bench_policy.py
	$(PY) bench/bench_server.py

soak: $(STAMP)-test
	$(PY) bench/soak.py

evaluate: $(STAMP)-test
	$(BIN)/autoballoon evaluate --scenarios scenarios --report docs

# Real guests under qemu:///system: the scenarios in scenarios/real against every policy, plus the
# calibration measurements. Raw traces go to $(REALBENCH_RECORD); the lease file lets several users of one
# host take turns between workloads.
REALBENCH_RECORD ?= artifacts/realbench
RIG_LEASE ?= /run/lock/autoballoon-rig.lease
realbench: rig $(STAMP)-test $(STAMP)-libvirt
	$(BIN)/autoballoon --connect qemu:///system evaluate --real --scenarios scenarios/real --calibrate \
		--record $(REALBENCH_RECORD) --report docs --lease $(RIG_LEASE)

# The balloon alone, with free page reporting, and virtio-mem, on plain-QEMU guests under the daemon on
# qmp://: the results go beside the traces, where `make realbench` (or `evaluate --real --from-record`)
# finds them for its report.
mechbench: rig $(STAMP)-test
	mkdir -p $(REALBENCH_RECORD)
	flock $(RIG_LEASE) $(PY) bench/bench_mechanisms.py --json $(REALBENCH_RECORD)/mechanisms.json

# Production-like Debian guests (built once per machine and recipe, cached): every policy and fpr-only,
# by host memory returned and application slowdown, into docs/evaluation-real.md's production section.
# The recordings are committed: `evaluate --production --from-record` re-makes the report without guests,
# and a run interrupted half way goes on from the runs already recorded.
PRODBENCH_RECORD ?= scenarios/production/recorded
prodbench: rig $(STAMP)-test $(STAMP)-libvirt
	$(BIN)/autoballoon --connect qemu:///system evaluate --production --scenarios scenarios/production \
		--record $(PRODBENCH_RECORD) --report docs --lease $(RIG_LEASE)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
