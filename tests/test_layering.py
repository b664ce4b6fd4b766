"""One-way layering of the project's folders: each imports only the layers below it, none imports a private name of another.

core <- models <- calibration_data <- runtime <- convert <- quantize <- package <- web <- demo, evaluate <- the command
line (``videoseal_litert/``); ``core`` (console, artifacts and hashing, metrics, the logit layout, errors and
exit handling) imports no other folder and no torch, and ``demo`` and ``evaluate`` are siblings. Read from the source (every ``import videoseal_litert.<folder>``, at any
indentation), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = (
    "core",
    "models",
    "calibration_data",
    "runtime",
    "convert",
    "quantize",
    "package",
    "web",
    "demo",
    "video",
    "evaluate",
    "videoseal_litert",
)
IMPORT = re.compile(r"^\s*(?:from|import)\s+videoseal_litert\.(\w+)(?:\.(\w+))?(?:\s+import\s+\(?([^\n]*))?", re.M)


def edges() -> list[tuple[str, str, str, list[str]]]:
    """(from folder, to folder, file, imported names) for every import of another folder."""
    out = []
    for folder in LAYERS:
        for p in sorted((ROOT / folder).rglob("*.py")):
            for m in IMPORT.finditer(p.read_text()):
                target = m.group(1)
                if target in LAYERS and target != folder:
                    names = [n.strip().split(" as ")[0] for n in (m.group(3) or "").split(",") if n.strip()]
                    out.append((folder, target, str(p.relative_to(ROOT)), names))
    return out


def test_every_import_goes_down_the_layers():
    up = [(a, b, f) for a, b, f, _ in edges() if LAYERS.index(b) > LAYERS.index(a)]
    assert not up, "imports against the layering (folder -> higher folder, file): " + "; ".join(f"{a} -> {b} ({f})" for a, b, f in up)


def test_no_folder_cycle():
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in edges():
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for n in graph.get(start, ()):
            if n == goal or (n not in seen and (seen.add(n) or reaches(n, goal, seen))):
                return True
        return False

    assert not [a for a in graph if reaches(a, a, set())]


def test_no_private_name_is_imported_across_folders():
    private = [(f, n) for _, _, f, names in edges() for n in names if n.startswith("_") and not n.startswith("__")]
    assert not private, private


def test_the_graph_is_read():  # the checks above would pass on an empty graph: make sure they see the real one
    seen = {(a, b) for a, b, _, _ in edges()}
    assert {("convert", "runtime"), ("quantize", "convert"), ("package", "convert"), ("models", "core"), ("runtime", "core")} <= seen


def test_core_is_the_bottom_and_imports_no_torch():
    assert not [(a, b) for a, b, _, _ in edges() if a == "core"]
    torch_users = [p.name for p in (ROOT / "core").glob("*.py") if re.search(r"^\s*(import|from)\s+torch\b", p.read_text(), re.M)]
    assert not torch_users, torch_users


def test_demo_and_evaluate_are_siblings():
    assert not [(a, b) for a, b, _, _ in edges() if {a, b} == {"demo", "evaluate"}]
