"""One-way layering of the project's folders: each imports only the layers below it, none imports a private name of another.

core <- models <- calibration_data <- runtime <- convert <- quantize <- package <- web <- demo <- video <- evaluate <- the command
line (``videoseal_litert/``); ``core`` (console, artifacts and hashing, metrics, the logit layout, errors and
exit handling) imports no other folder and no torch, and ``demo`` and ``evaluate`` are siblings. Read from the source (every ``import videoseal_litert.<folder>``, at any
indentation), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import re
from pathlib import Path

from videoseal_litert.core.layers import LAYERS  # the one list: the stage fingerprint hashes the same folders

ROOT = Path(__file__).resolve().parent.parent
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


def test_the_stage_fingerprint_hashes_every_layer(tmp_path):
    """One byte changed in any layer (core/ included, which no stage used to see) changes the fingerprint every stage
    records; the same code gives the same one; and no folder of Python outside the layers exists to escape it."""
    from tests.conftest import copy_code
    from videoseal_litert.convert.options import code_fingerprint

    copy_code(ROOT, tmp_path)
    base = code_fingerprint(tmp_path)
    assert base == code_fingerprint(ROOT)
    for d in LAYERS:
        f = sorted((tmp_path / d).rglob("*.py"))[-1]
        old = f.read_bytes()
        f.write_bytes(old[:-1] + bytes([old[-1] ^ 1]))
        code_fingerprint.cache_clear()
        assert code_fingerprint(tmp_path) != base, f"a change in {d}/ leaves the stage fingerprint as it was"
        f.write_bytes(old)
    code_fingerprint.cache_clear()
    skip = {"tests", ".venv", ".cache", ".git", "artifacts", "dist"}  # tests, the environment, outputs
    folders = {d.name for d in ROOT.iterdir() if d.is_dir() and d.name not in skip and next(d.rglob("*.py"), None)}
    assert folders <= set(LAYERS), f"folders of code the fingerprint does not see: {sorted(folders - set(LAYERS))}"


def test_file_names_are_made_by_the_parts_only():
    """Only ``Part.file`` / ``Part.report`` (convert/part.py) name a part's files: no other module spells out a variant's
    file name (``"int8.tflite"``, ``f"embedder-{v}.tflite"``) or builds one from a prefix. Scratch files (pieces,
    candidates in temporary folders) are not a part's files and are named where they are made."""
    from videoseal_litert.models.variants import VARIANTS

    variants = "|".join(sorted((re.escape(v) for v in VARIANTS), key=len, reverse=True))
    spelled = re.compile(rf"[\"'/](?:embedder-)?(?:{variants})\.tflite[\"']")
    built = re.compile(r"(?:prefix\}|'embedder-' if|\"embedder-\" if|embedder-\{)[^\n]*\.tflite")
    found = []
    for folder in LAYERS:
        for p in sorted((ROOT / folder).rglob("*.py")):
            if p == ROOT / "convert" / "part.py" or "node_modules" in p.parts:
                continue
            for n, line in enumerate(p.read_text().splitlines(), 1):
                if spelled.search(line) or built.search(line):
                    found.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "file names built outside Part.file / Part.report:\n" + "\n".join(found)


def test_no_two_modules_share_a_name_across_folders():
    """A module's name says what it is: no stem twice among the layers (``parts.py`` beside ``parts.py``, ``run.py`` beside
    ``run.py``), and none named after a folder (``evaluate/core.py`` beside ``core/``)."""
    seen: dict[str, list[str]] = {}
    for folder in LAYERS:
        for p in (ROOT / folder).rglob("*.py"):
            if p.name != "__init__.py" and "node_modules" not in p.parts:
                seen.setdefault(p.stem, []).append(str(p.relative_to(ROOT)))
    twice = {k: v for k, v in seen.items() if len(v) > 1 or (k in LAYERS and any(not f.startswith(f"{k}/") for f in v))}
    assert not twice, twice


MODULE_IMPORT = re.compile(
    r"^\s*(?:from\s+videoseal_litert\.(\w+)\.(\w+)\s+import|import\s+videoseal_litert\.(\w+)\.(\w+)|from\s+videoseal_litert\.(\w+)\s+import\s+\(?([\w ,]+))",
    re.M,
)


def module_edges() -> dict[str, set[str]]:
    """``folder.module`` -> the project's modules it imports (at any indentation: a lazy import counts)."""
    graph: dict[str, set[str]] = {}
    for folder in LAYERS:
        for p in (ROOT / folder).rglob("*.py"):
            if "node_modules" in p.parts:
                continue
            me = graph.setdefault(f"{folder}.{p.stem}", set())
            for m in MODULE_IMPORT.finditer(p.read_text()):
                if m.group(1) or m.group(3):
                    me.add(f"{m.group(1) or m.group(3)}.{m.group(2) or m.group(4)}")
                else:
                    for name in m.group(6).split(","):
                        name = name.strip().split(" as ")[0]
                        if name and (ROOT / m.group(5) / f"{name}.py").is_file():
                            me.add(f"{m.group(5)}.{name}")
    return graph


def test_no_circle_of_modules():
    """No module reaches itself through the project's imports (families and parts register themselves by decorator
    instead of importing one another: models/catalog.py, convert/parts.py)."""
    graph = module_edges()
    assert "models.catalog" in graph and "models.convnext" in graph["models.catalog"]
    circles, state = [], {}

    def visit(v: str, path: list[str]) -> None:
        state[v] = 1
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                circles.append(path[path.index(w) :] + [w] if w in path else [v, w])
            elif w not in state:
                visit(w, [*path, w])
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v, [v])
    assert not circles, "circles of modules: " + "; ".join(" -> ".join(c) for c in circles)


# Every entry point a command reaches (issue 40): it takes the run object first and no loose copy of what it holds.
ENTRY_POINTS = {
    "convert/stages.py": (
        "stage_load",
        "stage_inspect",
        "stage_export",
        "stage_tflite",
        "stage_verify",
        "stage_verify_file",
        "stage_bench",
    ),
    "quantize/quantize_stage.py": ("stage_quantize",),
    "package/bundle.py": ("build_bundle",),
    "convert/arm_check.py": ("arm_check",),
    "web/check.py": ("web_check",),
    "demo/watermark.py": ("run_demo",),
    "evaluate/evaluation.py": ("run_evaluate",),
    "evaluate/scale.py": ("run_scale",),
    "video/commands.py": ("run_video_embed", "run_video_detect", "run_video_attacks"),
}


def run_object_fields() -> dict[str, str]:
    """RunOptions' fields and their annotations, read from the source (no torch needed)."""
    import ast

    tree = ast.parse((ROOT / "convert" / "options.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RunOptions")
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_every_entry_point_takes_the_run_object():
    """First parameter ``RunOptions``; no parameter that copies one of its fields (same name and type: a part's parsed
    variant tuple is that part's choice, not a copy of the typed ``--variants`` string) or names the model."""
    import ast

    fields = run_object_fields()
    assert {"spec", "out", "ckpt", "threads", "images", "variants", "force", "allow_unverified"} <= set(fields)
    bad = []
    for file, names in ENTRY_POINTS.items():
        defs = {n.name: n for n in ast.parse((ROOT / file).read_text()).body if isinstance(n, ast.FunctionDef)}
        for name in names:
            assert name in defs, f"{file}: {name} not found (renamed? update ENTRY_POINTS)"
            args = defs[name].args.args + defs[name].args.kwonlyargs
            first = ast.unparse(args[0].annotation) if args and args[0].annotation else None
            copies = [a.arg for a in args if a.arg in fields and a.annotation and ast.unparse(a.annotation) == fields[a.arg]]
            copies += [a.arg for a in args if a.arg in ("model", "spec", "threads")]  # the run's model and threads
            if first != "RunOptions" or copies:
                bad.append(f"{file}:{name} (first parameter {first}; copies of the run's fields {copies})")
    assert not bad, "entry points not taking the run object: " + "; ".join(bad)


def test_the_run_object_is_built_by_the_command_line_only():
    """``RunOptions(...)`` is built in one place outside tests (``handlers.run_options``), once per command; the code
    below passes it on (``dataclasses.replace`` for a changed copy), never rebuilding it from loose values."""
    built = [
        f"{p.relative_to(ROOT)}:{i}"
        for folder in dict.fromkeys((*LAYERS, "videoseal_litert"))
        for p in sorted((ROOT / folder).rglob("*.py"))
        if "node_modules" not in p.parts
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bRunOptions\(", line)
    ]
    assert len(built) == 1 and built[0].startswith("videoseal_litert/handlers.py:"), built
