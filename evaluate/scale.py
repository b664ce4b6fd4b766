"""``videoseal-litert evaluate-scale`` (``make evaluate-scale``): both engines measured on this machine, and a cluster projected.

Runs the same evaluation with ``ENGINE=local`` and then ``ENGINE=ray`` (each alone, one after the
other, each into its own folder, from scratch), checks their rows are identical, and writes
``<out>/<model>/evaluate-scale/scale.{json,md}``:

- measured: images per second of each engine, and the local engine's seconds per image per stage
  (mark = embed + every attack; decode, per variant), on this machine;
- projected: images per second and days for a job (default one million photos) on clusters of
  ``nodes x cores``, from the per-image core-seconds measured here (each stage's pool sized to its
  share of the work, one thread per actor, Ray's overhead as measured here: the ratio of the Ray
  engine's rate to the local one's), and which stage is the bottleneck: the largest share of
  core-seconds per image.

The projection assumes the work stays CPU-bound on cores like these (no shared-storage or network
limit); reading images from object storage at cluster scale is the next limit and is not measured.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.core.artifacts import machine_description, write_json, write_text
from videoseal_litert.core.console import say
from videoseal_litert.core.errors import VerificationError
from videoseal_litert.evaluate.engines import read_rows
from videoseal_litert.evaluate.evaluation import EvalRequest, run_evaluate

CLUSTERS = ((1, 2), (1, 16), (4, 16), (16, 32), (64, 64))  # (nodes, cores per node)
JOB_IMAGES = 1_000_000


def same_rows(a: Any, b: Any) -> bool:
    import numpy as np

    if a.num_rows != b.num_rows or a.schema.names != b.schema.names:
        return False
    for n in a.schema.names:
        x, y = a.column(n).to_numpy(zero_copy_only=False), b.column(n).to_numpy(zero_copy_only=False)
        if not (np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else bool(np.all(x == y))):
            return False
    return True


def project(per_image_core_s: dict[str, float], ray_efficiency: float, job_images: int = JOB_IMAGES) -> list[dict[str, Any]]:
    """Images/s and days for ``job_images`` on each cluster of CLUSTERS, and the bottleneck stage."""
    total = sum(per_image_core_s.values())
    bottleneck = max(per_image_core_s, key=per_image_core_s.get)
    out = []
    for nodes, cores in CLUSTERS:
        ips = nodes * cores / total * ray_efficiency
        out.append(
            {
                "nodes": nodes,
                "cores_per_node": cores,
                "images_per_s": round(ips, 3),
                "days": round(job_images / ips / 86400, 2),
                "bottleneck": bottleneck,
                "bottleneck_share": round(per_image_core_s[bottleneck] / total, 3),
            }
        )
    return out


def run_scale(opts: RunOptions, req: EvalRequest | None = None) -> dict[str, Any]:
    """The run's evaluation on the local engine, then on Ray (each from scratch, into its own folder), and the projection."""
    req = req or EvalRequest()
    base = opts.model_dir.path / "evaluate-scale"
    opts, threads, model = replace(opts, force=True), opts.threads, opts.spec.name
    local = run_evaluate(opts, replace(req, engine="local", eval_dir=base / "local"))
    ray = run_evaluate(opts, replace(req, engine="ray", eval_dir=base / "ray"))
    identical = same_rows(read_rows(base / "local" / "rows"), read_rows(base / "ray" / "rows"))
    lt, rt = local["timing"], ray["timing"]
    n = lt["images"]
    per_image = {k: v / n for k, v in lt["seconds"].items()}  # seconds per image in one process of ``threads`` threads
    core_s = {k: v * threads for k, v in per_image.items()}
    eff = rt["images_per_s"] / lt["images_per_s"] if lt.get("images_per_s") and rt.get("images_per_s") else 1.0
    report = {
        "model": model,
        "machine": machine_description(),
        "threads": threads,
        "images": n,
        "attacks": len(local["attacks"]),
        "variants": list(dict.fromkeys(e["variant"] for e in local["table"])),
        "embedders": list(dict.fromkeys(e["embedder"] for e in local["table"])),
        "local": lt,
        "ray": rt,
        "rows_identical": identical,
        "seconds_per_image": {k: round(v, 3) for k, v in per_image.items()},
        "core_seconds_per_image": {k: round(v, 3) for k, v in core_s.items()},
        "ray_efficiency_vs_local": round(eff, 3),
        "projection": project(core_s, min(eff, 1.0)),
        "job_images": JOB_IMAGES,
    }
    write_json(base / "scale.json", report)
    write_text(base / "scale.md", render(report))
    say(render(report))
    if not identical:
        raise VerificationError(f"the local and Ray engines wrote different rows (see {base})")
    return report


def render(r: dict[str, Any]) -> str:
    lt, rt = r["local"], r["ray"]
    lines = [
        f"# Evaluation throughput: {r['model']}, {r['images']} images x {r['attacks']} attacks, "
        f"embedders {', '.join(r['embedders'])}, decoders {', '.join(r['variants'])}",
        "",
        f"Machine: {r['machine']}; {r['threads']} thread(s) per process/actor. Rows identical between engines: {r['rows_identical']}.",
        "",
        "| engine | images | wall (s) | start-up (s) | images/s |",
        "|---|---|---|---|---|",
        f"| local | {lt['images']} | {lt['wall_s']:.1f} | {lt.get('startup_s', 0):.1f} | {lt['images_per_s']:.4f} |",
        f"| ray (local cluster) | {rt['images']} | {rt['wall_s']:.1f} | in wall | {rt['images_per_s']:.4f} |",
        "",
        "Seconds per image per stage (local engine; mark = embed + every attack, decode = every attacked image through one variant):",
        "",
        "| stage | s/image | core-s/image | share |",
        "|---|---|---|---|",
    ]
    tot = sum(r["core_seconds_per_image"].values())
    for k, v in r["seconds_per_image"].items():
        c = r["core_seconds_per_image"][k]
        lines.append(f"| {k} | {v:.3f} | {c:.3f} | {c / tot:.0%} |")
    lines += [
        "",
        f"Projected for {r['job_images']:,} images (per-image core-seconds above, Ray efficiency {min(r['ray_efficiency_vs_local'], 1):.2f} as measured here):",
        "",
        "| nodes x cores | images/s | days | bottleneck (share of core-seconds) |",
        "|---|---|---|---|",
    ]
    for p in r["projection"]:
        lines.append(
            f"| {p['nodes']} x {p['cores_per_node']} | {p['images_per_s']:.2f} | {p['days']:.2f} | {p['bottleneck']} ({p['bottleneck_share']:.0%}) |"
        )
    return "\n".join(lines) + "\n"
