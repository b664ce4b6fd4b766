"""Embed a watermark with a converted embedder, without torch. Needs ai-edge-litert, numpy, pillow, litert_runner.py and route.py.

    python run_embedder.py embedder-int8.tflite photo.png --bits e07ff66e5007 --out marked.png   # hex, or 0/1 bits
    python run_embedder.py --selftest          # the bundle's embedder golden vectors by the rule; exit 1 on a failure
    python run_embedder.py --selftest --native ./litert_run    # the same through the LiteRT C library

Any image size: at the file's processing size its ``watermarked`` output is the whole official embed
path; other sizes follow the official route (``route.py``, steps in ``model.json`` ``embedder.route``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

try:  # inside the videoseal_litert package
    from videoseal_litert.core.message import MessageError, message_hex, parse_message
    from videoseal_litert.models.gate import Rule, judge_embedder, judge_runtime_difference

    from .litert_runner import open_file, unverified_files
    from .route import embed
except ImportError:  # a bundle: these, the rule (gate.py, metrics.py) and message.py ship beside this script
    from gate import Rule, judge_embedder, judge_runtime_difference
    from litert_runner import open_file, unverified_files
    from message import MessageError, message_hex, parse_message
    from route import embed


class Embedder:
    """One interpreter; ``embed(image (H, W, 3) float in [0, 1], bits (nbits,) of 0/1) -> watermarked (H, W, 3)``."""

    def __init__(self, tflite: str | Path, route: dict, num_threads: int = 2, native: list[str] | None = None) -> None:
        self.runner = open_file(tflite, num_threads, native)
        self.size = self.runner.input_shapes["image"][1]
        self.nbits = self.runner.input_shapes["message"][1]
        self.route = route

    def embed(self, image: np.ndarray, bits: np.ndarray) -> np.ndarray:
        bits = np.asarray(bits)
        if bits.shape != (self.nbits,) or not np.isin(bits, (0, 1)).all():
            raise ValueError(f"the message must be {self.nbits} bits of 0/1, got shape {bits.shape}")
        return embed(self.runner, self.route, self.size, image, bits)


HERE = Path(__file__).resolve().parent
ROUTE_MAX_LEVELS = 1  # a route graph's output rounded to 8 bits, against its golden PNG
ROUTE_MAX_OFF = 0.01  # the fraction of values allowed one level off (float32 rounding across a .5 boundary)


def route_graph_differences(got: np.ndarray, want: np.ndarray) -> list[str]:
    """Why a route graph's 8-bit output is not its golden one (none when it is, to the bounds above)."""
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    why = []
    if d.max() > ROUTE_MAX_LEVELS:
        why.append(f"a value {int(d.max())} levels from the golden output (at most {ROUTE_MAX_LEVELS})")
    if (d > 0).mean() > ROUTE_MAX_OFF:
        why.append(f"{(d > 0).mean():.2%} of the values a level off (at most {ROUTE_MAX_OFF:.0%})")
    return why


def route_selftest(bundle: Path, native: list[str] | None = None) -> int:
    """Each route graph (``route-<W>x<H>.tflite``) on its golden frame and residual; the number that failed."""
    from PIL import Image

    listing = bundle / "golden" / "route" / "golden.json"
    if not listing.is_file():
        return 0
    failures = 0
    for g in json.loads(listing.read_text())["graphs"]:
        v = g["golden"]
        frame = np.asarray(Image.open(bundle / v["frame"]).convert("RGB"), np.float32) / 255
        res = np.fromfile(bundle / v["residual"], "<f4").reshape(v["residual_shape"])
        out = open_file(bundle / g["file"], 2, native)({"frame": frame[None], "residual": res[None]})["watermarked"][0]
        got = np.clip(np.round(np.asarray(out) * 255), 0, 255).astype(np.uint8)
        why = route_graph_differences(got, np.asarray(Image.open(bundle / v["watermarked"]).convert("RGB")))
        print(f"{'ok  ' if not why else 'FAIL'} {g['file']}: the route at {g['size'][0]}x{g['size'][1]} against its golden output")
        for w in why:
            print(f"     {w}")
        failures += bool(why)
    return failures


def selftest(bundle: Path = HERE, native: list[str] | None = None, allow_unverified: bool = False, verified_only: bool = False) -> int:
    """Every embedder golden vector: the cover PNG and message through each file (through the C library with
    ``native``, the command that starts ``litert_run``), judged by the project's rule (``gate.py``): the watermark
    PyTorch writes on the same cover against the file's error (the ``pixels`` group; the message PyTorch's extractor
    decodes was judged at verification, which has PyTorch), and the difference from the x86 outputs at most 1% of
    the watermark's RMS. Files the bundle marks unverified are refused unless ``allow_unverified``."""
    from PIL import Image

    refused = unverified_files(bundle, "embedder")
    skip = {line.split(":", 1)[0] for line in refused} if verified_only else set()
    for line in refused if verified_only else []:
        print(f"skip {line}")
    if refused and not (allow_unverified or verified_only):
        for line in refused:
            print(f"FAIL {line}")
        print("selftest: the bundle holds embedder files that were not verified (--allow-unverified runs them anyway)")
        return 1
    route = json.loads((bundle / "model.json").read_text())["embedder"]["route"]
    golden = json.loads((bundle / "golden" / "embedder" / "golden.json").read_text())
    failures = 0
    for variant, g in golden["variants"].items():
        if g["file"] in skip:
            continue
        emb = Embedder(bundle / g["file"], route, native=native)
        why = []
        for v in g["vectors"]:
            img = np.asarray(Image.open(bundle / "golden" / v["image"]).convert("RGB"), np.float32) / 255
            got = emb.embed(img, np.array([int(c) for c in v["message"]]))
            torch_, x86 = np.load(bundle / v["pytorch"]), np.load(bundle / v["watermarked"])
            verdict = judge_embedder(img, torch_, got, Rule.from_dict(g["rule"]))
            diff = judge_runtime_difference(x86, got, verdict.groups[0].signal_rms, None)
            bad = verdict.failures + diff["failures"]
            why += [f"{v['image']}: {w}" for w in bad]
            snr = verdict.groups[0].as_dict()["snr_db"]
            print(
                f"{'ok  ' if not bad else 'FAIL'} {variant} {v['image']}: SNR against PyTorch {'exact' if snr is None else f'{snr:.1f} dB'} "
                f"(at least {g['rule']['floor_db']:g}); max |diff| to x86 {diff['max_abs_diff']:.2g} (at most {diff['bound']:.2g})"
            )
        for w in why:
            print(f"     {w}")
        failures += bool(why)
    failures += route_selftest(bundle, native)
    runner = f" through the native LiteRT C library ({' '.join(native)})" if native else " through the Python interpreter (ai-edge-litert)"
    print(f"selftest{runner}: " + ("all embedder golden vectors pass the rule" if not failures else f"{failures} file(s) FAILED"))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:

    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--selftest":
        sp = argparse.ArgumentParser(prog="run_embedder.py --selftest")
        sp.add_argument("--native", metavar="CMD", help="run through the LiteRT C library: the command that starts litert_run")
        sp.add_argument("--allow-unverified", action="store_true", help="run files the bundle marks unverified too")
        sp.add_argument("--verified-only", action="store_true", help="skip (and name) files the bundle marks unverified")
        s = sp.parse_args(argv[1:])
        return selftest(
            native=shlex.split(s.native) if s.native else None, allow_unverified=s.allow_unverified, verified_only=s.verified_only
        )
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tflite")
    ap.add_argument("image")
    ap.add_argument("--bits", required=True, help="the message: hex (as run_extractor.py prints it) or a string of 0 and 1")
    ap.add_argument("--out", required=True, help="where to write the watermarked PNG")
    ap.add_argument("--model-json", default=None, help="the bundle's model.json (default: beside the .tflite)")
    ap.add_argument("--native", metavar="CMD", help="run through the LiteRT C library: the command that starts litert_run")
    a = ap.parse_args(argv)
    desc = Path(a.model_json) if a.model_json else Path(a.tflite).parent / "model.json"
    emb = Embedder(a.tflite, json.loads(desc.read_text())["embedder"]["route"], native=shlex.split(a.native) if a.native else None)
    try:
        bits = parse_message(a.bits, emb.nbits)
    except MessageError as e:
        ap.error(f"--bits {e}")
    try:
        photo = read_photo(a.image)
    except OSError as e:
        ap.error(f"{a.image}: not a readable image ({e})")
    out = emb.embed(photo.rgb, bits)
    kept = write_photo(photo, out, Path(a.out))
    print(f"wrote {a.out} ({out.shape[1]}x{out.shape[0]}{kept}); message {message_hex(bits)} ({len(bits)} bits)")
    return 0


class Photo:
    """A photo as the embedder takes it (RGB float32 (H, W, 3) in [0, 1], EXIF orientation applied) and what is carried
    to the output untouched: its alpha channel, its EXIF (orientation then reset to 1) and its ICC profile."""

    def __init__(self, rgb: np.ndarray, alpha: object, exif: object, icc: bytes | None, mode: str) -> None:
        self.rgb, self.alpha, self.exif, self.icc, self.mode = rgb, alpha, exif, icc, mode


def read_photo(path: str | Path) -> Photo:
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        exif = opened.getexif()
        im = ImageOps.exif_transpose(opened)
        icc = opened.info.get("icc_profile")
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        alpha = im.convert("RGBA").getchannel("A") if has_alpha else None
        rgb = np.asarray(im.convert("RGB"), np.float32) / 255
    if exif and 0x0112 in exif:
        exif[0x0112] = 1  # the pixels are now upright
    return Photo(rgb, alpha, exif, icc, opened.mode)


def write_photo(photo: Photo, out: np.ndarray, path: Path) -> str:
    """The watermarked pixels with the photo's alpha, EXIF and ICC profile (PNG; JPEG at quality 95 when ``path`` says
    .jpg, without alpha); the colour is saved as 8-bit RGB (a grayscale photo comes back RGB). What was kept, for the
    summary line."""
    from PIL import Image

    im = Image.fromarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8))
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    if photo.alpha is not None and not jpeg:
        im.putalpha(photo.alpha)
    kw: dict = {"quality": 95} if jpeg else {}
    if photo.exif:
        kw["exif"] = photo.exif.tobytes()
    if photo.icc:
        kw["icc_profile"] = photo.icc
    tmp = path.with_name(f".{path.name}.tmp")
    im.save(tmp, format="JPEG" if jpeg else "PNG", **kw)
    tmp.replace(path)
    kept = [k for k, v in (("transparency", photo.alpha is not None and not jpeg), ("EXIF", photo.exif), ("ICC profile", photo.icc)) if v]
    return (", kept " + ", ".join(kept) if kept else "") + ("; saved as RGB" if photo.mode in ("L", "LA", "I;16", "I") else "")


if __name__ == "__main__":
    sys.exit(main())
