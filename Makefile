# hostmesh: the two commands are `make demo` and `make test`.
#   make demo    set up the host, build the lab image, start 3 nodes, run site.yml
#   make test    set up the host, then at once: pytest tests/integration | unit tests, molecule
#   make lint    ruff, ansible-lint (production profile), ansible-test sanity
#   make bench   every benchmark in bench/, as `name: value unit` lines
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= false
export PY_COLORS ?= 0

PYTHON := $(VENV)/bin/python
LAB := python3 $(ROOT)/scripts/lab.py
# Every directory under molecule/ holding a molecule.yml is a scenario;
# `default` (the whole lab) runs last. Override: make test-molecule SCENARIOS="wireguard".
SCENARIOS ?= $(sort $(filter-out default,$(patsubst molecule/%/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))) \
             $(if $(wildcard molecule/default/molecule.yml),default)
SANITY_DIR ?= /tmp/hostmesh-sanity
GET_PIP_STANDIN := $(HOME)/.ansible/test/cache/get_pip_24_2.py

.PHONY: help setup image lab-up lab-down lab-status demo test test-unit test-integration \
        test-local test-molecule \
        lint lint-ruff lint-ansible sanity bench clean

help:
	@sed -n 's/^#   //p' Makefile

setup:
	@$(ROOT)/scripts/setup-host.sh

# HOSTMESH_FRESH_IMAGE=1 rebuilds the image even when one for the current
# package list exists (.ci/run sets it: CI never reuses an earlier image).
image: setup
	@$(LAB) image $(if $(filter-out 0,$(HOSTMESH_FRESH_IMAGE)),--force)

# The lab's outside world listens on the lab network's gateway, where
# inventory/lab points the roles (scripts/lab_gateway.py): the Cloudflare API
# stand-in with its DNS, the ACME test CA (pebble), the image registry with the
# demo app.
LAB_STATE := $(ROOT)/inventory/lab/.hostmesh
lab-up: image
	@$(LAB) up
	@$(PYTHON) $(ROOT)/scripts/lab_gateway.py start --state-dir $(LAB_STATE) \
	  --subnet 10.231.1.0/24 >/dev/null

# The lab's state goes with it (secrets, mesh record, DNS records, the local
# Cloudflare API server); the wheel cache (hostmesh_cache_dir) stays.
lab-down:
	@$(LAB) down
	@if [ -x $(PYTHON) ]; then $(PYTHON) $(ROOT)/scripts/lab_gateway.py stop \
	  --state-dir $(LAB_STATE) >/dev/null; fi
	@rm -rf inventory/lab/.hostmesh/secrets inventory/lab/.hostmesh/wireguard.json \
	  inventory/lab/.hostmesh/cloudflare-api.* inventory/lab/.hostmesh/acme-* \
	  inventory/lab/.hostmesh/registry inventory/lab/.hostmesh/registry.* \
	  inventory/lab.hostmesh.yml

lab-status:
	@$(LAB) status

# After site.yml: the dynamic inventory from the primary (written to
# inventory/lab.hostmesh.yml), whoami.lab.test through each node, the DNS records.
demo: lab-up
	ansible-playbook -i inventory/lab site.yml
	@$(PYTHON) $(ROOT)/scripts/demo_show.py

# pytest exits 5 when it collected no test: that fails `make test` like any
# other non-zero exit (no `-` prefix, no `|| true`).
# Two lanes at once (scripts/test-lanes.sh): `labs`, the lab drills of
# tests/integration, which mostly wait on nodes, beside `local`, the loopback
# tests then every Molecule scenario. Every target runs even when an earlier
# one failed; `make test` fails if any did. CI adds `lint` to the local lane:
# make test LOCAL_LANE="test-local test-molecule lint".
LOCAL_LANE ?= test-local test-molecule
test: setup image
	@$(ROOT)/scripts/test-lanes.sh "labs:test-integration" "local:$(LOCAL_LANE)"

PYTEST_ARGS ?= tests/
# --durations: the slowest tests at the end of each run, so CI's log shows
# where its time goes (the whole run must stay well under an hour).
test-unit:
	pytest --durations=25 $(PYTEST_ARGS)

# The two halves of tests/ that `make test` runs side by side.
test-integration:
	pytest --durations=25 tests/integration

test-local:
	pytest --durations=10 tests/unit tests/security

test-molecule:
	@failed=(); for s in $(SCENARIOS); do \
	  echo "== molecule test -s $$s"; start=$$(date +%s); \
	  if molecule test -s "$$s"; then echo "== $$s passed in $$(( $$(date +%s) - start ))s"; \
	  else echo "== $$s FAILED"; failed+=("$$s"); fi; \
	done; \
	if [ $${#failed[@]} -gt 0 ]; then echo "molecule scenarios failed: $${failed[*]}"; exit 1; fi

lint: setup
	@rc=0; for t in lint-ruff lint-ansible sanity; do \
	  $(MAKE) --no-print-directory $$t || { echo "== make $$t FAILED"; rc=1; }; \
	done; exit $$rc

lint-ruff:
	ruff check .

lint-ansible:
	ansible-lint --profile production

# ansible-test wants the collection under ansible_collections/<ns>/<name>,
# as a git checkout; it copies the tracked (and new, not ignored) files.
sanity:
	@$(PYTHON) $(ROOT)/scripts/sanity.py --dest $(SANITY_DIR) --get-pip $(GET_PIP_STANDIN)

bench: setup image
	@$(PYTHON) $(ROOT)/scripts/run_bench.py

clean:
	rm -rf $(SANITY_DIR) build dist hostmesh-cluster-*.tar.gz .pytest_cache .ruff_cache
