"""Embedders against the official vectors (``*-embedder-mini``), their converter forms, the odd-size
route, ``make embedder`` end to end, and the error cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from ai_edge_litert.interpreter import Interpreter

from tests.conftest import EMBEDDER_MINIS, cli
from videoseal_litert.convert.load import load_embedder
from videoseal_litert.core.errors import CardError, CheckpointMismatchError, UnsupportedModelError
from videoseal_litert.models.registry import resolve
from videoseal_litert.models.unet import JND, ChanRMSNorm, MsgProcessor, WatermarkEmbedder
from videoseal_litert.runtime.route import jnd_heatmap, resize_aa
from videoseal_litert.runtime.run_embedder import Embedder

# The float32 tolerances of ../shared/reference/README.md (the reference vectors' own notes) for a faithful implementation.
WM_TOL, RES_MAX_TOL, RES_MEAN_TOL = 1e-5, 1e-3, 1e-5


@pytest.fixture(scope="module", params=EMBEDDER_MINIS)
def mini(request, reference):
    loaded = load_embedder(resolve(str(reference / f"{request.param}.yaml")))
    return request.param, loaded, dict(np.load(reference / f"{request.param}.npz"))


def test_official_watermarked_and_residual(mini):
    name, loaded, z = mini
    m = loaded.module
    imgs, msgs = torch.from_numpy(z["images"]), torch.from_numpy(z["msgs"])
    with torch.no_grad():
        res = m.residual(imgs, msgs).numpy()
        wm = m(imgs, msgs).numpy()
    assert np.abs(wm - z["watermarked"]).max() <= WM_TOL, name
    assert np.abs(res - z["residual"]).max() <= RES_MAX_TOL and np.abs(res - z["residual"]).mean() <= RES_MEAN_TOL, name
    # The watermark is there: a wrong message or no residual would be far off (the reference notes: >= 0.03).
    assert np.abs(z["watermarked"] - z["images"]).max() > 100 * WM_TOL


def test_official_odd_size(mini):
    name, loaded, z = mini
    img, msg = torch.from_numpy(z["image_odd"]), torch.from_numpy(z["msg_odd"])
    with torch.no_grad():
        x = F.interpolate(img, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)
        res = loaded.module.residual(x, msg).numpy()
        wm = loaded.module(img, msg).numpy()
    assert wm.shape == z["watermarked_odd"].shape
    assert np.abs(wm - z["watermarked_odd"]).max() <= WM_TOL, name
    assert np.abs(res - z["residual_odd"]).max() <= RES_MAX_TOL, name


def test_deploy_form_equals_official(mini, reference):
    name, _, z = mini
    loaded = load_embedder(resolve(str(reference / f"{name}.yaml")))  # a fresh copy: deploy_form changes it in place
    deploy = loaded.family.deploy_form(loaded.module)
    with torch.no_grad():
        wm, res = deploy(torch.from_numpy(z["images"]).permute(0, 2, 3, 1), torch.from_numpy(z["msgs"]).float())
    assert np.abs(wm.permute(0, 3, 1, 2).numpy() - z["watermarked"]).max() <= WM_TOL, name
    assert np.abs(res.permute(0, 3, 1, 2).numpy() - z["residual"]).max() <= RES_MAX_TOL, name


def test_message_processor_fc_form_equals_lookup():
    torch.manual_seed(0)
    mp = MsgProcessor(nbits=12, hidden_size=8, msg_mult=1.5)
    msgs = torch.randint(0, 2, (5, 12))
    lat = torch.randn(5, 3, 4, 6)
    want = mp(lat, msgs)
    # Independently: bit k picks row 2k + bit; rows summed; tiled; concatenated after the latents.
    rows = torch.stack([mp.msg_embeddings.weight[2 * torch.arange(12) + m].sum(0) for m in msgs]) * 1.5
    assert torch.allclose(want[:, 3:], rows[:, :, None, None].expand(-1, -1, 4, 6), atol=1e-6)
    mp.deploy()
    got = mp(lat, msgs.float())
    assert torch.allclose(got, want, atol=1e-5) and torch.equal(got[:, :3], lat)


def test_rms_norm_form_agrees():
    n = ChanRMSNorm(6)
    with torch.no_grad():
        n.gamma.copy_(torch.randn(6, 1, 1))
    x = torch.randn(2, 6, 5, 5)
    assert torch.allclose(n(x), F.normalize(x, dim=1) * 6**0.5 * n.gamma, atol=1e-6)


def _jnd_official(x01: torch.Tensor) -> torch.Tensor:
    """The official jnd_1_1 heatmap with its boolean-mask assignment (videoseal/modules/jnd.py)."""
    x = 255 * (0.299 * x01[:, 0:1] + 0.587 * x01[:, 1:2] + 0.114 * x01[:, 2:3])
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    ky = torch.tensor([[1.0, 2, 1], [0, 0, 0], [-1, -2, -1]])[None, None]
    kl = torch.tensor([[1.0, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]])[None, None]
    la = F.conv2d(x, kl, padding=2) / 32
    mask = la <= 127
    la[mask] = 17 * (1 - torch.sqrt(la[mask] / 127 + 1e-5))
    la[~mask] = 3 / 128 * (la[~mask] - 127) + 3
    cm = torch.sqrt(F.conv2d(x, kx, padding=1) ** 2 + F.conv2d(x, ky, padding=1) ** 2)
    cm = 0.117 * (16 * cm**2.4 / (cm**2 + 26**2))
    return torch.clamp_min(la + cm - 0.3 * torch.minimum(la, cm), 0) / 255


def test_jnd_forms_agree():
    x = torch.rand(2, 3, 40, 56)
    x[0, :, :10] = 1.0  # bright area: the la > 127 branch
    want = _jnd_official(x)
    assert (F.conv2d(255 * x.mean(1, keepdim=True), torch.ones(1, 1, 5, 5), padding=2) / 32 > 127).any()
    assert torch.allclose(JND(1, 1).heatmaps(x), want, atol=1e-7)
    got_np = np.stack([jnd_heatmap(im.permute(1, 2, 0).numpy()) for im in x])
    assert np.abs(got_np[..., 0] - want[:, 0].numpy()).max() < 1e-6


@pytest.mark.parametrize("size", [(256, 256), (240, 320), (100, 513), (17, 9)])
def test_numpy_antialiased_resize_matches_torch(size):
    x = torch.rand(1, 3, 256, 256) if size == (240, 320) else torch.rand(1, 3, 240, 320)
    want = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0].permute(1, 2, 0).numpy()
    got = resize_aa(x[0].permute(1, 2, 0).numpy(), *size)
    assert got.shape == want.shape and np.abs(got - want).max() < 2e-5


def test_full_size_embedders_have_the_official_layout(reference):
    layouts = json.loads((reference / "official_layouts.json").read_text())
    for reg, key in (
        ("videoseal", "videoseal_1.0"),
        ("pixelseal", "pixelseal"),
        ("chunkyseal", "chunkyseal"),
        ("videoseal_0.0", "videoseal_0.0"),
    ):
        with torch.device("meta"):
            m = WatermarkEmbedder(resolve(reg).card.embedder)
        got = {k: list(v.shape) for k, v in m.state_dict().items() if k.startswith("embedder.")}
        assert got == layouts[key]["embedder"], reg
    assert sum(p.numel() for p in m.embedder.parameters()) > 0


# ---- make embedder end to end ---------------------------------------------------------------------


@pytest.mark.slow
def test_embedder_files_and_contract(pipeline):
    d = pipeline.embedder("videoseal_1.0-embedder-mini")
    for v in ("fp32", "fp16", "int8"):
        runner = Interpreter(model_path=str(d / f"embedder-{v}.tflite")).get_signature_runner()
        ins, outs = runner.get_input_details(), runner.get_output_details()
        assert {k: list(x["shape"]) for k, x in ins.items()} == {"image": [1, 256, 256, 3], "message": [1, 32]}
        assert list(outs["watermarked"]["shape"]) == [1, 256, 256, 3] and list(outs["residual"]["shape"]) == [1, 256, 256, 1]
        assert all(x["dtype"] == np.float32 for x in (*ins.values(), *outs.values()))
        rep = json.loads((d / f"verify-embedder-{v}.json").read_text())
        assert rep["passed"] and rep["part"] == "embedder" and rep["decoding"] is None  # this card has no extractor
        assert rep["num_images"] == 21
    fp32 = json.loads((d / "verify-embedder-fp32.json").read_text())
    assert fp32["checks"]["route"]["passed"] and fp32["max_abs_pixel_diff"] < 1e-5
    desc = json.loads((d / "embedder.json").read_text())
    assert (
        desc["part"] == "embedder"
        and desc["route"]["residual_channels"] == 1
        and desc["contract"]["outputs"][1]["shape"] == [1, 256, 256, 1]
    )
    sizes = {v: (d / f"embedder-{v}.tflite").stat().st_size for v in ("fp32", "fp16", "int8")}
    assert sizes["int8"] < 0.4 * sizes["fp32"] and sizes["fp16"] < 0.6 * sizes["fp32"]
    # The same stages as the extractor: per-op error report and quantize.json for its quantized files.
    q = json.loads((d / "embedder-quantize.json").read_text())
    assert set(q["variants"]) == {"fp16", "int8"} and q["part"] == "embedder" and q["calibration"]["used"] == 96
    assert (d / "op-error-embedder-int8.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_embedder_accuracy_control_puts_the_error_10db_below_the_watermark(pipeline):
    """All-INT8 puts this mini's error about 4 dB below its watermark; the control keeps groups float, chosen on
    the validation split, until it is 10 dB below; the held-out photos (never chosen on) show the same margin."""
    d = pipeline.embedder("videoseal_1.0-embedder-mini")
    c = json.loads((d / "embedder-quantize.json").read_text())["variants"]["int8"]["accuracy_control"]
    assert c["target"] == 10.0 and c["reached"] and c["start"]["value"] < 10.0 <= c["curve"][-1]["value"]
    assert len(c["kept_float_ops"]) > 0 and c["kept_float_groups"] == [p["added"] for p in c["curve"][1:]]
    rep = json.loads((d / "verify-embedder-int8.json").read_text())
    assert rep["watermark_snr_db"] >= 10.0  # on the held-out photos
    assert c["cost"]["size_ratio"] < 1.5 and c["cost"]["latency_ratio"] > 0
    assert (d / "control-embedder-int8.png").read_bytes()[:4] == b"\x89PNG"


def test_export_takes_the_embedder_part(pipeline, tmp_path, reference):
    """`make export PART=embedder`: the same export stage as the extractor's, on the embedder's names."""
    import onnxruntime as ort

    out, d = pipeline.copy(pipeline.embedder("videoseal_1.0-embedder-mini"), tmp_path)
    assert cli("export", "--model", pipeline.card("videoseal_1.0-embedder-mini"), "--part", "embedder", "--out", out, "--untrained") == 0
    assert (d / "embedder.pt2").stat().st_size > 0 and json.loads((d / "embedder-export.json").read_text())[
        "onnx_max_abs_diff_vs_pytorch"
    ] <= 1e-4
    z = np.load(reference / "videoseal_1.0-embedder-mini.npz")
    sess = ort.InferenceSession(str(d / "embedder.onnx"), providers=["CPUExecutionProvider"])
    wm, _ = sess.run(
        ["watermarked", "residual"], {"image": z["images"][:1].transpose(0, 2, 3, 1).copy(), "message": z["msgs"][:1].astype(np.float32)}
    )
    assert np.abs(wm - z["watermarked"][:1].transpose(0, 2, 3, 1)).max() <= 1e-4


def test_bench_reports_the_embedder_files(pipeline, tmp_path):
    out, d = pipeline.copy(pipeline.embedder("videoseal_1.0-embedder-mini"), tmp_path)
    assert (
        cli(
            "bench",
            "--model",
            pipeline.card("videoseal_1.0-embedder-mini"),
            "--out",
            out,
            "--runs",
            "2",
            "--bench-threads",
            "1",
            "--untrained",
        )
        == 0
    )
    b = json.loads((d / "embedder-bench.json").read_text())
    assert set(b["latency"]["1"]) == {"fp32", "fp16", "int8", "pytorch"} and b["latency"]["1"]["fp32"]["ratio_to_fp32"] == 1.0
    assert all(b["peak_rss_mb"][v] > 0 and b["size"][v]["bytes"] == (d / f"embedder-{v}.tflite").stat().st_size for v in b["size"])
    assert b["part"] == "embedder" and b["inputs"] == {"image": [1, 256, 256, 3], "message": [1, 32]}


def test_fp32_file_reproduces_official_watermarked(pipeline, reference):
    d = pipeline.embedder("videoseal_1.0-embedder-mini")
    z = np.load(reference / "videoseal_1.0-embedder-mini.npz")
    emb = Embedder(d / "embedder-fp32.tflite", json.loads((d / "embedder.json").read_text())["route"])
    for img, msg, want in zip(z["images"], z["msgs"], z["watermarked"], strict=True):
        got = emb.embed(img.transpose(1, 2, 0), msg)
        assert np.abs(got - want.transpose(1, 2, 0)).max() <= 1e-4
    # Odd size: the route (resize in, file, residual back, JND at full size, blend) in numpy.
    got = emb.embed(z["image_odd"][0].transpose(1, 2, 0), z["msg_odd"][0])
    assert np.abs(got - z["watermarked_odd"][0].transpose(1, 2, 0)).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pixelseal-embedder-mini", "chunkyseal-embedder-mini", "videoseal_0.0-embedder-mini"])
def test_every_family_converts_to_the_official_output(name, pipeline, reference):
    d = pipeline.embedder(name, "fp32")
    z = np.load(reference / f"{name}.npz")
    emb = Embedder(d / "embedder-fp32.tflite", json.loads((d / "embedder.json").read_text())["route"])
    got = np.stack([emb.embed(i.transpose(1, 2, 0), m) for i, m in zip(z["images"], z["msgs"], strict=True)])
    assert np.abs(got - z["watermarked"].transpose(0, 2, 3, 1)).max() <= 1e-4
    got = emb.embed(z["image_odd"][0].transpose(1, 2, 0), z["msg_odd"][0])
    assert np.abs(got - z["watermarked_odd"][0].transpose(1, 2, 0)).max() <= 1e-4


@pytest.mark.slow
def test_tiny_pair_decodes_tflite_embedded_images_as_pytorch(demo_run):
    """The demo's embedder files (fp32, int8), decoded by the pair's extractor as PyTorch-embedded images are."""
    out, rc, _ = demo_run
    assert rc == 0
    for v in ("fp32", "int8"):
        d = json.loads((out / "tiny" / f"verify-embedder-{v}.json").read_text())["decoding"]
        assert d["bit_agreement_tflite_vs_pytorch_embedded"] == 1.0, v
        assert abs(d["bit_accuracy_tflite_embedded"] - d["bit_accuracy_pytorch_embedded"]) <= 0.001, v
        assert d["bit_accuracy_pytorch_embedded"] > 0.99
    # The extractor of a pair is verified on the photos watermarked by its embedder, bits compared there.
    rep = json.loads((out / "tiny" / "verify-int8.json").read_text())
    assert (
        rep["bit_rows"] == "watermarked images" and rep["num_images"] == 21 * 7 and sum(n.endswith("+wm") for n in rep["images"]) == 21
    )  # and 5 attacked views each


# ---- error cases ----------------------------------------------------------------------------------


def test_card_without_embedder_section(reference, tmp_path, capsys):
    assert cli("embedder", "--model", str(reference / "videoseal_1.0-mini.yaml"), "--out", str(tmp_path), "--untrained") == 2
    err = capsys.readouterr().err
    assert "CardError" in err and "no 'embedder' section" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.tflite"))


def test_embedder_only_card_refuses_extractor_conversion(reference, tmp_path, capsys):
    assert cli("convert", "--model", str(reference / "videoseal_1.0-embedder-mini.yaml"), "--out", str(tmp_path), "--untrained") == 2
    assert "no 'extractor' section" in capsys.readouterr().err
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.package.bundle import PackagingError, build_bundle

    with pytest.raises(PackagingError, match="has no extractor"):
        build_bundle(
            RunOptions(spec=resolve(str(reference / "videoseal_1.0-embedder-mini.yaml")), untrained=True, out=tmp_path),
            dist=tmp_path / "dist",
        )
    assert not (tmp_path / "dist").exists()


def test_checkpoint_without_embedder_keys(reference, tmp_path, capsys):
    # An extractor-only official checkpoint for an embedder card.
    ckpt = reference / "videoseal_1.0-mini.pth"
    code = cli(
        "embedder",
        "--model",
        str(reference / "videoseal_1.0-embedder-mini.yaml"),
        "--ckpt",
        str(ckpt),
        "--out",
        str(tmp_path),
        "--untrained",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "CheckpointMismatchError" in err and "no 'embedder.' keys" in err


def test_checkpoint_missing_one_embedder_key(reference, tmp_path):
    sd = torch.load(reference / "videoseal_1.0-embedder-mini.pth", weights_only=True)
    del sd["model"]["embedder.unet.outc.bias"]
    p = tmp_path / "broken.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointMismatchError, match=r"missing:\n\s+embedder.unet.outc.bias"):
        load_embedder(resolve(str(reference / "videoseal_1.0-embedder-mini.yaml")), p)


def test_shared_message_embedding_must_agree(reference, tmp_path):
    sd = torch.load(reference / "videoseal_1.0-embedder-mini.pth", weights_only=True)
    sd["model"]["embedder.unet.msg_processor.msg_embeddings.weight"] = sd["model"]["embedder.unet.msg_processor.msg_embeddings.weight"] + 1
    p = tmp_path / "split.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointMismatchError, match="one shared tensor"):
        load_embedder(resolve(str(reference / "videoseal_1.0-embedder-mini.yaml")), p)


def test_official_checkpoint_with_both_parts_converts_either(reference, tmp_path):
    # An official checkpoint holds detector. and embedder. keys: each part loads from it, strictly.
    from videoseal_litert.convert.load import load_extractor

    both = {
        **torch.load(reference / "videoseal_1.0-mini.pth", weights_only=True)["model"],
        **torch.load(reference / "videoseal_1.0-embedder-mini.pth", weights_only=True)["model"],
    }
    p = tmp_path / "both.pth"
    torch.save({"model": both}, p)
    emb = load_embedder(resolve(str(reference / "videoseal_1.0-embedder-mini.yaml")), p)
    ext = load_extractor(resolve(str(reference / "videoseal_1.0-mini.yaml")), p)
    z = np.load(reference / "videoseal_1.0-embedder-mini.npz")
    with torch.no_grad():
        assert np.abs(emb.module(torch.from_numpy(z["images"]), torch.from_numpy(z["msgs"])).numpy() - z["watermarked"]).max() <= WM_TOL
    logits = np.load(reference / "videoseal_1.0-mini.npz")
    with torch.no_grad():
        assert np.abs(ext.module(torch.from_numpy(logits["images"])).numpy() - logits["logits"]).max() < 1e-4


@pytest.mark.parametrize(
    "edit, error, fragment",
    [
        (lambda c: c.pop("embedder") and c.pop("extractor", None), CardError, "neither an 'extractor' nor an 'embedder'"),
        (lambda c: c["embedder"].update(model="vae_small"), UnsupportedModelError, "unknown embedder model 'vae_small'"),
        (lambda c: c["embedder"]["params"]["unet"].update(z_chanels=4), CardError, "did you mean z_chanels -> z_channels"),
        (lambda c: c["args"].update(attenuation="jnd_9_9"), UnsupportedModelError, "attenuation 'jnd_9_9'"),
        (lambda c: c["embedder"]["params"]["unet"].update(in_channels=3), CardError, "Y-input embedder"),
    ],
)
def test_bad_embedder_cards(edit, error, fragment, reference, tmp_path):
    card = yaml.safe_load((reference / "videoseal_1.0-embedder-mini.yaml").read_text())
    edit(card)
    p = tmp_path / "card.yaml"
    p.write_text(yaml.safe_dump(card))
    with pytest.raises(error, match=fragment):
        resolve(str(p)).card.embedder  # noqa: B018


def test_an_unknown_embedder_model_is_named_with_the_registrys_closest():
    """The hint comes from the registry's cards (their ``embedder.model`` as written) and the families' patterns."""
    from videoseal_litert.models.catalog import embedder_families, embedder_family_for_model, registered_embedder_models
    from videoseal_litert.models.registry import REGISTRY

    written = {yaml.safe_load(s.card_path.read_text())["embedder"]["model"] for s in REGISTRY}
    assert registered_embedder_models() == sorted(written) and "unet_chunky" in written and "tile_tiny" in written
    assert {f.model_pattern for f in embedder_families().values()} == {"unet*", "tile_tiny"}
    with pytest.raises(UnsupportedModelError, match=r"'vnet_chunky'; supported: tile_tiny, unet\*\. Did you mean 'unet_chunky'\?"):
        embedder_family_for_model("vnet_chunky", "card x")
