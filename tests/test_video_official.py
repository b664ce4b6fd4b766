"""The project's video route against the official one (``../shared/reference/video/``: ``Videoseal.embed(...,
is_video=True)``, ``detect`` and ``extract_message`` at 871eda0, on a 19-frame 200x328 clip with a cut at frame 10).

Embedding (all four families' embedder minis): the step comes from the card as the official loader reads it (4 for
VideoSeal 1.0 and 0.0, 8 for PixelSeal and ChunkySeal under their older ``videowam_*`` names); PyTorch through the
project's route (``video/watermark.KeyFrames``: key frames, the residual repeated, not interpolated, the JND of every
full-size frame, the blend) gives the official float output to the tolerances the vectors' README measured across
machines; each converted file, through the same route, passes the rule's pixels group against it at its floor.

Detection (the VideoSeal 1.0 and ChunkySeal extractor minis): the project reads frames as ``detect`` does (antialiased
resize), so its per-frame logits are ``detect``'s, and its four aggregations are ``extract_message``'s on those
logits (``*_aa``); on the official ``extract_message`` logits (resized without antialias) the same aggregation code
gives the official ``agg_*`` exactly. The project's choice of the antialiased resize is stated in docs/video.md."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import EmbedderPart, ExtractorPart
from videoseal_litert.models.gate import judge_signal
from videoseal_litert.models.registry import resolve
from videoseal_litert.models.variants import rule_for, variant
from videoseal_litert.runtime.route import jnd_heatmap, resize_aa
from videoseal_litert.runtime.runners import open_file
from videoseal_litert.video.key_frames import AGGREGATIONS, KeyFrames, aggregate, video_parity
from videoseal_litert.video.official_route import OfficialVideo, chunks, detect_chunk, embed_chunk, to_tensor

FAMILIES = ["videoseal_1.0", "pixelseal", "chunkyseal", "videoseal_0.0"]
STEPS = {"videoseal_1.0": 4, "pixelseal": 8, "chunkyseal": 8, "videoseal_0.0": 4}  # the vectors' README table


def _vidref(reference: Path):
    sys.path.insert(0, str(reference / "video"))
    try:
        import vidref_load
    finally:
        sys.path.pop(0)
    return vidref_load


def _route(run, part: EmbedderPart, z) -> np.ndarray:
    """The clip through the project's key-frame route, in float32 as the official ``embed`` returns it."""
    spec = part.opts.spec
    k = KeyFrames(run, part.family.route(spec.card.embedder), part.size, z["message"], spec.card.video.step)
    return np.stack([k.watermark(i, f.astype(np.float32) / np.float32(255)) for i, f in enumerate(z["frames_uint8"])])


def _embedder(reference: Path, family: str, tmp_path: Path) -> EmbedderPart:
    spec = resolve(str(reference / f"{family}-embedder-mini.yaml"))
    return EmbedderPart(RunOptions(spec=spec, out=tmp_path, untrained=True, threads=1))


@pytest.mark.parametrize("family", FAMILIES)
def test_pytorch_video_route_gives_the_official_embed(family, reference, tmp_path):
    z = _vidref(reference).load_video(reference / "video" / f"{family}-video.npz")  # checks the official output's SHA-256
    part = _embedder(reference, family, tmp_path)
    video = part.opts.spec.card.video
    assert (video.step, video.chunk) == (int(z["step"]), int(z["chunk"])) == (STEPS[family], 32)
    assert ("videowam_step_size" in video.source) == (family in ("pixelseal", "chunkyseal"))
    run = part.torch_runner(part.load(), ("residual",))
    # Stage by stage, at the README's cross-machine tolerances: the key frames' residuals resized back ...
    for k, t in enumerate(z["key_frames"]):
        x = z["frames_uint8"][t].astype(np.float32) / 255
        res = np.asarray(run({"image": resize_aa(x, 256, 256)[None], "message": z["message"][None].astype(np.float32)})["residual"][0])
        want = z["residual_keyframes_256"][k].transpose(1, 2, 0)
        assert np.abs(res - want).max() <= 1e-3 and np.abs(res - want).mean() <= 1e-5
        back = z["residual_keyframes"][k].transpose(1, 2, 0)
        # the resize back (numpy's antialiased bilinear against torch's, on the official residual): measured 2.7e-5 at most
        assert np.abs(resize_aa(want, 200, 328) - back).max() <= 5e-5
    # ... the JND heatmap of every full-size frame (JND families) ...
    if "jnd_heatmaps" in z:
        for t in (0, 9, 10, 18):
            h = jnd_heatmap(z["frames_uint8"][t].astype(np.float32) / 255)
            assert np.abs(h[..., 0] - z["jnd_heatmaps"][t, 0]).max() <= 1e-6
    # ... and the whole route: float32 rounding away from the official output on every frame, the cut included.
    got = _route(run, part, z)
    diff = np.abs(got - z["watermarked"])
    assert diff.max() <= 1e-5 and diff.mean() <= 5e-7, (diff.max(), diff.mean())  # measured: 0.7e-6 to 5.7e-6 max
    # What a wrong route would give, for scale: key frames every frame (no residual reuse) is far off after the cut.
    wrong = KeyFrames(run, part.family.route(part.opts.spec.card.embedder), part.size, z["message"], 1)
    assert np.abs(wrong.watermark(10, z["frames_uint8"][10].astype(np.float32) / 255) - z["watermarked"][10]).max() > 1e-3
    # make video-bench's baseline (video/official_route.py): the clip in one batch as Videoseal.embed runs it, at the
    # same tolerance; with a step of 1 it is far off after the cut.
    loaded = part.load()
    o = OfficialVideo(loaded.module.eval(), part.size, video.step, video.chunk, loaded.config.scaling_i, loaded.config.scaling_w,
                      loaded.module.attenuation)  # fmt: skip
    msg = torch.as_tensor(z["message"]).reshape(1, -1)
    diff = np.abs(embed_chunk(o, to_tensor(list(z["frames_uint8"])), msg).permute(0, 2, 3, 1).numpy() - z["watermarked"])
    assert diff.max() <= 1e-5 and diff.mean() <= 5e-7, (diff.max(), diff.mean())
    o.step = 1
    assert np.abs(embed_chunk(o, to_tensor(list(z["frames_uint8"])), msg).permute(0, 2, 3, 1).numpy() - z["watermarked"]).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_embedder_file_passes_the_rule_on_the_official_video(family, reference, pipeline, tmp_path):
    """Every converted file of the family's mini, through the same route, against the official output: the rule's
    pixels group (the watermark the official code writes against the file's error) at the variant's floor."""
    name = f"{family}-embedder-mini"
    d = pipeline.embedder(name) if family == "videoseal_1.0" else pipeline.embedder(name, "fp32")
    z = _vidref(reference).load_video(reference / "video" / f"{family}-video.npz")
    part = _embedder(reference, family, tmp_path)
    frames = z["frames_uint8"].astype(np.float32) / 255
    files = sorted(d.glob("embedder-*.tflite"))
    assert files
    for f in files:
        v = f.stem.removeprefix("embedder-")
        rule = rule_for(part.opts.spec, "embedder", variant(v, "embedder"))
        got = _route(open_file(f, 1), part, z)
        g = judge_signal("pixels / official video", z["watermarked"] - frames, got - z["watermarked"], rule.floor.snr_db)
        assert g.passed, (f.name, g.failures)


@pytest.mark.parametrize("family", ["videoseal_1.0", "chunkyseal"])
def test_detection_gives_the_official_logits_and_aggregations(family, reference, tmp_path):
    z = _vidref(reference).load_detect(reference / "video" / f"{family}-detect.npz")
    spec = resolve(str(reference / f"{family}-mini.yaml"))
    part = ExtractorPart(RunOptions(spec=spec, out=tmp_path, untrained=True, threads=1))
    run = part.torch_runner(part.load())
    got = []
    for f in z["frames_uint8"]:
        o = run({"image": resize_aa(f.astype(np.float32) / 255, 256, 256)[None]})
        got.append(np.concatenate([np.reshape(o["mask_logit"], -1), np.reshape(o["bit_logits"], -1)]))
    got = np.stack(got)
    assert np.abs(got - z["logits"]).max() <= 1e-5  # ``detect``'s per-frame logits (antialiased resize)
    # make video-bench's baseline: the official detect in chunks (of 8 here: 8, 8, 3 frames), the same logits.
    o = OfficialVideo(part.load().module.eval(), part.size, spec.card.video.step, 8)
    batched = np.concatenate([detect_chunk(o, to_tensor(b)).numpy() for b in chunks(iter(z["frames_uint8"]), o.chunk)])
    assert np.abs(batched - z["logits"]).max() <= 1e-5
    for how in AGGREGATIONS:
        # The aggregation code on the official extract_message logits: the official aggregates, the official bits.
        ours = aggregate(z["logits_extract"][:, 1:], how)
        scale = np.abs(z[f"agg_{how}"]).max()
        assert np.abs(ours - z[f"agg_{how}"]).max() <= 1e-5 * scale and ((ours > 0) == z[f"bits_{how}"].astype(bool)).all()
        # The project's route (antialiased frames): extract_message's aggregates with antialias, decisions equal but
        # where the official aggregate is within float32 rounding of zero (the README's fragile bits).
        mine = aggregate(got[:, 1:], how)
        want = z[f"agg_{how}_aa"]
        assert np.abs(mine - want).max() <= 1e-5 * np.abs(want).max()
        flipped = (mine > 0) != z[f"bits_{how}_aa"].astype(bool)
        assert (np.abs(want[flipped]) <= 1e-5 * np.abs(want).max()).all()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["videoseal_1.0", "chunkyseal"])
def test_each_extractor_file_passes_the_rule_on_the_official_video(family, reference, pipeline):
    """The converted fp32 extractor on the clip's frames against the official per-frame logits and their
    aggregation, by the rule (per frame and the aggregated bits)."""
    d = pipeline.converted(f"{family}-mini")
    z = _vidref(reference).load_detect(reference / "video" / f"{family}-detect.npz")
    spec = resolve(str(reference / f"{family}-mini.yaml"))
    run = open_file(d / "fp32.tflite", 1)
    got = []
    for f in z["frames_uint8"]:
        o = run({"image": resize_aa(f.astype(np.float32) / 255, 256, 256)[None]})
        got.append(np.concatenate([np.reshape(o["mask_logit"], -1), np.reshape(o["bit_logits"], -1)]))
    v = video_parity(z["logits"], np.stack(got), "avg", rule_for(spec, "extractor", variant("fp32", "extractor")), True)
    assert v.passed, v.failures
