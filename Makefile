# Thin layer over `python -m convert` / `python -m quantize`: one stage per process, so each
# stage's peak RSS is its own. Stages skip themselves when their inputs are unchanged.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= videoseal
OUT ?= artifacts
THREADS ?= 2

ARGS = --model $(MODEL) --out $(OUT) --threads $(THREADS) \
	$(if $(CKPT),--ckpt $(CKPT)) \
	$(if $(filter 1 yes true,$(RANDOM_INIT)),--random-init) \
	$(if $(filter 1 yes true,$(ALLOW_ZERO_WEIGHTS)),--allow-zero-weights) \
	$(if $(IMAGES),--images $(IMAGES)) \
	$(if $(filter 1 yes true,$(FORCE)),--force)

.PHONY: setup demo test test-full convert load inspect export tflite verify quantize bench bench-scale kernel-bench package demo-watermark robustness train-tiny calibration-manifest lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The main job on the embedded default model. Until a trained default exists (issue 6), this
# converts and verifies the full-size VideoSeal 1.0 architecture with RANDOM weights, labelled so.
demo: setup
	$(MAKE) --no-print-directory convert MODEL=videoseal RANDOM_INIT=1 OUT=$(OUT)

test: setup
	$(PY) -m pytest -q

test-full: setup
	$(PY) -m pytest -q -m fullsize

inspect export tflite load: setup
	$(PY) -m convert $@ $(ARGS)

verify: setup
	$(PY) -m convert verify $(ARGS) --variant $(or $(VARIANT),fp32)

convert: setup
	$(PY) -m convert load $(ARGS)
	$(PY) -m convert export $(ARGS)
	$(PY) -m convert tflite $(ARGS)
	$(PY) -m convert verify $(ARGS) --variant fp32

# Quantized variants from the FP32 artifact (never re-converts): int8, int8-full, int8-dynamic, fp16.
# CALIB=dir adds calibration images; IO=int8 gives int8.tflite integer input and output.
quantize: setup
	$(PY) -m quantize --model $(MODEL) --out $(OUT) --threads $(THREADS) $(if $(CKPT),--ckpt $(CKPT)) \
		$(if $(filter 1 yes true,$(RANDOM_INIT)),--random-init) $(if $(IMAGES),--images $(IMAGES)) \
		$(if $(CALIB),--calib $(CALIB)) $(if $(IO),--io $(IO)) $(if $(filter 1 yes true,$(FORCE)),--force) \
		$(if $(QUANT_VARIANTS),--variants $(QUANT_VARIANTS))

# Latency (1 and 2 threads, interleaved), size and peak RSS of every variant: bench.json / bench.md.
bench: setup
	$(PY) -m convert bench $(ARGS) $(if $(RUNS),--runs $(RUNS))

# Full size, RANDOM weights: every stage of VideoSeal 1.0 and ChunkySeal in its own process, wall
# time and peak RSS from the kernel, into each bench.json and $(OUT)/scaling.{json,md}. Not in
# `make test` (about an hour on 2 cores); the same code runs on chunkyseal-mini in the tests.
SCALE_MODELS ?= videoseal,chunkyseal
bench-scale: setup
	$(PY) -m convert.bench_scale --models $(SCALE_MODELS) --out $(OUT) --threads $(THREADS) --force $(if $(RUNS),--runs $(RUNS)) \
		$(if $(filter 1 yes true,$(RESUME)),--resume)

# Deployment bundle in $(DIST)/<model>/: verified .tflite files with embedded metadata, model.json,
# golden vectors, reports, torch-free run_extractor.py, manifest.json. REVERIFY=1 re-verifies changed files.
DIST ?= dist
VARIANTS ?= int8,fp16,fp32
package: setup
	$(PY) -m package --model $(MODEL) --out $(OUT) --dist $(DIST) --variants $(VARIANTS) --threads $(THREADS) \
		$(if $(CKPT),--ckpt $(CKPT)) $(if $(filter 1 yes true,$(RANDOM_INIT)),--random-init) $(if $(filter 1 yes true,$(REVERIFY)),--reverify)

# The watermark demo on a model with an embedder (default: the tiny pair in models/tiny):
# embed held-out photos, convert + quantize the extractor, decode with PyTorch, FP32 and INT8.
PAIR ?= models/tiny
demo-watermark: setup
	$(PY) -m demo watermark --model-dir $(PAIR) --out $(OUT) --threads $(THREADS)

robustness: setup
	$(PY) -m demo robustness --model-dir $(PAIR) --out $(OUT) --threads $(THREADS)

# Train the tiny pair (needs a GPU for the full 15,000 steps; resumable: rerun to continue).
TRAIN_ARGS ?=
train-tiny: setup
	$(PY) -m models.train_tiny --ckpt-dir runs/tiny --export $(PAIR) $(TRAIN_ARGS)

# One pointwise layer, float vs INT8: what bounds INT8 speed on this CPU ($(OUT)/kernel_bench.json).
kernel-bench: setup
	$(PY) -m quantize.kernel_bench --out $(OUT)

# Rewrite calibration_data/manifest.json from the fixed rule (commit the result).
calibration-manifest: setup
	$(PY) -m calibration_data.build

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf $(OUT) dist
