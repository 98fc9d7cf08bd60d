# Thin entry points; the work lives in the scripts they call.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
export PATH := $(abspath $(VENV))/bin:$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible/ansible.cfg)
# Where the test bed finds the upstream Kokoro-82M files it serves as a loopback mirror,
# and the mirror URL the tests fetch from (a user's own mirror is set the same way).
export KOKORO_DEPLOY_SEED_DIR ?= $(abspath ../shared/kokoro-82M)
export KOKORO_DEPLOY_MIRROR ?= http://127.0.0.1:18080/
# The local stand-in for the public base image that container tests build on.
export KOKORO_DEPLOY_BASE_IMAGE ?= kokoro-deploy/debian:12

.PHONY: help venv testbed lint unit server molecule test demo demo-down bench soak images bundle image-cpu image-gpu test-gpu-image
help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

venv: $(VENV)/.installed  ## Create the Python venv with the pinned tools.
# --no-compile: pip would compile the bytecode of every installed module (the ansible
# package's collections alone are tens of thousands of files, few ever imported); Python
# compiles what it imports, once, on first use.
$(VENV)/.installed: requirements-dev.txt constraints.txt images/kokoro/pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q --no-compile -r requirements-dev.txt -c constraints.txt && touch $@

testbed: venv  ## Install and start Docker, build base images, serve the model mirror.
	bash tests/testbed/up.sh

lint: venv  ## yamllint, ansible-lint (production profile), ruff.
	bash tests/stages.sh lint

unit: venv  ## pytest unit tests.
	bash tests/stages.sh unit

server: testbed  ## The Kokoro server's tests (real int8 model, container build).
	bash tests/stages.sh server

molecule: testbed  ## Every Molecule scenario (or SCENARIOS="a b").
	tests/molecule/run.sh $(SCENARIOS)

test: venv  ## Everything CI runs: test bed, lint, unit tests, server tests, Molecule.
	bash tests/stages.sh testbed lint unit server molecule

bench: testbed  ## Server benchmarks (speed, the audio cache); results go to docs/benchmarks/.
	python tests/bench/bench.py
	python tests/bench/cache_bench.py

soak: testbed  ## 30 minutes of mixed and hostile traffic (MINUTES=n); results go to docs/benchmarks/.
	python tests/bench/soak.py --minutes $(or $(MINUTES),30)

images: testbed  ## Build the CPU service images (Kokoro, llama-server, the TLS proxy) and save them to .cache/images.
	bash tests/testbed/service_images.sh

bundle: images  ## One archive for air-gapped hosts (models, images, Debian packages, compose, SHA256SUMS) in dist/.
	python tools/bundle.py build --models-from .cache/mirror --images kokoro-deploy/kokoro:cpu kokoro-deploy/llm:cpu kokoro-deploy/proxy:latest --debs roles --debs-image $(KOKORO_DEPLOY_BASE_IMAGE) --compose-plugin /usr/local/lib/docker/cli-plugins/docker-compose --out dist/ $(BUNDLE_ARGS)

image-cpu: testbed  ## Build the Kokoro CPU image (ONNX engine, no torch).
	docker build -f images/kokoro/Dockerfile --target cpu -t kokoro-deploy/kokoro:cpu .

image-gpu: testbed  ## Build the Kokoro GPU image (torch cu128, ~3.5 GB of wheels).
	docker build -f images/kokoro/Dockerfile --target gpu -t kokoro-deploy/kokoro:gpu .

test-gpu-image: testbed  ## Build the GPU image and speak all 54 voices with it on the CPU (~15 min).
	$(VENV)/bin/pytest images/kokoro/tests -m gpu_image

demo: testbed  ## Converge site.yml on a local sandbox host and show how to use it.
	bash tests/testbed/demo.sh

demo-down:  ## Remove the sandbox host.
	bash tests/testbed/sandbox.sh down
