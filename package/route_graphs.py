"""The route graphs in the bundle: each ``route-<W>x<H>.tflite`` that ``make route-graph`` verified (its record passed,
the file unchanged since), with one golden vector: a frame at its size (PNG, 8-bit: input = bytes / 255), the
embedder's residual for it (raw little-endian float32 of ``residual_shape``, PyTorch's) and the route's output rounded
to 8 bits (PNG). ``run_embedder.py --selftest`` runs each graph on its vector: every pixel within one level of the
golden output (the float route's output rounded; a runtime's float32 rounding moves a pixel across a rounding
boundary, a wrong graph moves many by more)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.core.artifacts import sha256_file, write_json
from videoseal_litert.core.errors import PackagingError
from videoseal_litert.core.images import to_uint8
from videoseal_litert.runtime import route as numpy_route
from videoseal_litert.runtime.litert_runner import LiteRTRunner
from videoseal_litert.runtime.run_embedder import ROUTE_MAX_LEVELS, ROUTE_MAX_OFF, route_graph_differences

log = logging.getLogger(__name__)

GOLDEN = "golden/route/golden.json"


def verified_graphs(folder: Path) -> list[dict[str, Any]]:
    """The records of the route graphs in ``folder`` that passed verification and are unchanged since."""
    out = []
    for rec in sorted(folder.glob("route-*x*.json")):
        r = json.loads(rec.read_text())
        path = folder / r["file"]
        if r["verification"]["passed"] and path.is_file() and sha256_file(path) == r["sha256"]:
            out.append(r)
        else:
            log.warning("%s: not shipped (verification failed, or the file changed since)", r["file"])
    return out


def ship_route_graphs(folder: Path, stage: Path, cover: np.ndarray, residual_of: Any) -> list[dict[str, Any]]:
    """Each verified route graph of ``folder`` into ``stage`` with its golden vector (``cover``, a golden photo in
    [0, 1], resized to the graph's size; ``residual_of(frame)`` the embedder's residual for it). What model.json
    lists; PackagingError when a graph misses its own golden output here."""
    from PIL import Image

    graphs = verified_graphs(folder)
    if not graphs:
        return []
    gdir = stage / "golden" / "route"
    gdir.mkdir(parents=True, exist_ok=True)
    listed = []
    for r in graphs:
        w, h = r["size"]
        frame8 = np.asarray(Image.fromarray(to_uint8(cover)).resize((w, h), Image.BICUBIC))
        frame = frame8.astype(np.float32) / 255
        res = np.asarray(residual_of(frame), np.float32)
        want = to_uint8(numpy_route.blend(r["route"], frame, numpy_route.resize_aa(res, h, w)))
        got = to_uint8(LiteRTRunner(folder / r["file"], 2)({"frame": frame[None], "residual": res[None]})["watermarked"][0])
        if why := route_graph_differences(got, want):
            raise PackagingError(f"{r['file']} misses its golden output on this machine: {'; '.join(why)}")
        stem = f"{w}x{h}"
        Image.fromarray(frame8).save(gdir / f"frame-{stem}.png")
        Image.fromarray(want).save(gdir / f"watermarked-{stem}.png")
        res.astype("<f4").tofile(gdir / f"residual-{stem}.f32")
        shutil.copy(folder / r["file"], stage / r["file"])
        listed.append(
            {
                "file": r["file"],
                "size": [w, h],
                "inputs": r["inputs"],
                "ms_per_image": r["ms_per_image"],
                "golden": {
                    "frame": f"golden/route/frame-{stem}.png",
                    "residual": f"golden/route/residual-{stem}.f32",
                    "residual_shape": list(res.shape),
                    "watermarked": f"golden/route/watermarked-{stem}.png",
                },
            }
        )
    write_json(stage / GOLDEN, {"max_levels": ROUTE_MAX_LEVELS, "max_off_fraction": ROUTE_MAX_OFF, "graphs": listed})
    return listed
