# Two commands after a clone: `make plan` and `make test`. Python 3.11 is all they need.
SHELL := bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
SGLANG_VENV := .venv-sglang
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
SGLANG_VERSION := 0.5.23
SGLANG_ROUTER_VERSION := 0.3.2
TRITON_VERSION := 3.8.0
TORCH_CPU_VERSION := 2.13.0
PROMETHEUS_DEB_VERSION := 2.42.0+ds-5+deb12u1
STACK ?= dev
# Where no CPU wheel of torch is at hand, point pip at PyTorch's CPU index, e.g.
# make test TORCH_PIP_ARGS='--index-url <PyTorch CPU wheel index>'
TORCH_PIP_ARGS ?=

.PHONY: plan test lint typecheck scan upstream pytest fmt bench clean schema promtool mutate

# Runs a stage and prints how long it took, so a slow CI names its slow stage.
define timed
	@start=$$(date +%s); echo "== $(1)"; $(2); rc=$$?; echo "== $(1): $$(( $$(date +%s) - start )) s"; exit $$rc
endef

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# SGLang's parser needs torch; a CPU build keeps it off the GPU and out of the project's venv. The router's
# parser (sglang-router, the Python launcher of the gateway image's release) lives there too.
$(SGLANG_VENV)/.installed: sglang_image/parser-requirements.txt
	$(PYTHON) -m venv $(SGLANG_VENV)
	$(SGLANG_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps \
		sglang==$(SGLANG_VERSION) triton==$(TRITON_VERSION) sglang-router==$(SGLANG_ROUTER_VERSION)
	$(SGLANG_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps $(TORCH_PIP_ARGS) \
		torch==$(TORCH_CPU_VERSION)
	$(SGLANG_VENV)/bin/pip install --quiet --disable-pip-version-check -r sglang_image/parser-requirements.txt
	touch $@

# Checkov has its own dependency tree (boto3, networkx, ...): its own venv keeps it out of the project's.
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

plan: $(VENV)/.installed
	$(VENV)/bin/sgldeploy plan --stack $(STACK)

test: lint typecheck scan upstream pytest

lint: $(VENV)/.installed
	$(call timed,lint,$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .)

typecheck: $(VENV)/.installed
	$(call timed,typecheck,$(VENV)/bin/mypy)

scan: $(VENV)/.installed $(CHECKOV_VENV)/.installed
	$(call timed,scan,$(VENV)/bin/python -m sgldeploy.offline.scan --checkov $(CHECKOV_VENV)/bin/checkov)

# promtool checks and unit-tests every PrometheusRule; Debian's prometheus package ships it.
promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus=$(PROMETHEUS_DEB_VERSION) >/dev/null; }

# The upstream files the tests read (CRDs, charts' default values), pinned by URL and sha256 in
# tests/upstream.lock.json, into the ignored .cache/upstream/: from SGLDEPLOY_UPSTREAM_MIRROR, else ../shared,
# else downloaded; every hash verified. Standard library only.
# The mirror: SGLDEPLOY_UPSTREAM_MIRROR when set, else a ../shared beside the checkout when there is one.
UPSTREAM_MIRROR := $(or $(SGLDEPLOY_UPSTREAM_MIRROR),$(wildcard $(abspath ..)/shared))
upstream:
	$(call timed,upstream,SGLDEPLOY_UPSTREAM_MIRROR='$(UPSTREAM_MIRROR)' $(PYTHON) tests/fetch_upstream.py)

pytest: $(VENV)/.installed $(SGLANG_VENV)/.installed $(CHECKOV_VENV)/.installed promtool upstream
	$(call timed,pytest,SGLANG_PYTHON=$(abspath $(SGLANG_VENV))/bin/python \
		SGLDEPLOY_CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(VENV)/bin/python -m pytest)

fmt: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

schema: $(VENV)/.installed
	$(VENV)/bin/sgldeploy schema > schema/sgldeploy.schema.json

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/plan_scaling.py
	$(VENV)/bin/python bench/sizing_and_lock.py
	$(VENV)/bin/python bench/prefetch.py
	$(VENV)/bin/python bench/cost_and_policy.py
	$(VENV)/bin/python bench/throughput.py

# Mutation testing, outside `make test`: mutmut runs the tests that reach each mutated function, once per
# mutant, and bench/mutate.py prints the score per module (how each status counts: its docstring).
# MUTATE_PATHS restricts the modules, MUTATE_TESTS the tests, MUTATE_CHILDREN the mutants run in parallel, e.g.
# make mutate MUTATE_PATHS=sgldeploy/builders/rollout.py MUTATE_TESTS=tests/test_rollout.py MUTATE_CHILDREN=1
# MUTATE_SAMPLE=N runs N mutants drawn at random (MUTATE_SEED) and scores those, with a 95% interval;
# MUTATE_FUNCTIONS="role_path Estimate.*" only the mutants of those functions (what a change touched).
MUTATE_PATHS ?= sgldeploy sglang_image/prefetch.py
MUTATE_TESTS ?=
MUTATE_CHILDREN ?=
MUTATE_SAMPLE ?=
MUTATE_SEED ?= 1
MUTATE_FUNCTIONS ?=

$(VENV)/.installed-mutate: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test,mutate]'
	touch $@

mutate: $(VENV)/.installed-mutate $(SGLANG_VENV)/.installed $(CHECKOV_VENV)/.installed promtool upstream
	$(call timed,mutate,SGLANG_PYTHON=$(abspath $(SGLANG_VENV))/bin/python \
		SGLDEPLOY_CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(VENV)/bin/python bench/mutate.py \
		--paths $(MUTATE_PATHS) $(if $(MUTATE_TESTS),--tests $(MUTATE_TESTS)) \
		$(if $(MUTATE_CHILDREN),--max-children $(MUTATE_CHILDREN)) \
		$(if $(MUTATE_SAMPLE),--sample $(MUTATE_SAMPLE) --seed $(MUTATE_SEED)) \
		$(if $(MUTATE_FUNCTIONS),--functions $(MUTATE_FUNCTIONS)))

clean:
	rm -rf $(VENV) $(SGLANG_VENV) $(CHECKOV_VENV) *.egg-info .cache/upstream .mutate mutants
