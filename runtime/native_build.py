"""Build ``runtime/native/litert_run.c`` against the LiteRT C library the ai-edge-litert wheel ships (``libLiteRt.so``).

Apps do not run Python: an Android app links LiteRT's native library through JNI, a Linux service
links it directly. ``litert_run`` is that route in about 300 lines of C (the LiteRT C API:
environment, model, compiled model, tensor buffers), so the bundle's golden vectors can be checked
through the library an app links, not only through the Python interpreter.

- **x86-64**: the system C compiler (``cc``/``gcc``) against the x86-64 wheel's ``libLiteRt.so``, with
  an rpath to it. ``make setup`` builds it into ``.venv/bin/litert_run``.
- **aarch64**: ``zig cc -target aarch64-linux-gnu`` (the ``ziglang`` wheel from PyPI, fetched once into
  the ARM64 cache: a cross compiler with its own glibc stubs, nothing installed system-wide) against the
  aarch64 wheel's ``libLiteRt.so`` from the ARM64 set-up (``runtime/arm.py``); it runs under QEMU with
  the set-up's sysroot, on the CPU model chosen.

The wheel has no headers; the C file declares the functions it calls (see its header comment).
Images (``--image``) are decoded with ``stb_image.h`` (public domain), from Debian's ``libstb-dev``: the
system's copy when installed, else the package fetched once with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into ``.cache/stb`` (nothing installed system-wide); it is passed with ``-isystem`` so the
runner's own code alone is held to ``-Wall -Wextra -Werror``, and the bundle ships the header beside the C file.
A failed build is a ``NativeBuildError`` naming the compiler and its message.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from videoseal_litert.core.errors import NativeBuildError

SOURCE = Path(__file__).resolve().parent / "native" / "litert_run.c"
ROOT = Path(__file__).resolve().parents[1]
SYSTEM_STB = Path("/usr/include/stb")
ZIG_VERSION = "0.17.1"
CFLAGS = ["-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror"]


def wheel_library(site: Path | None = None) -> Path:
    """``libLiteRt.so`` of the ai-edge-litert wheel in ``site`` (default: this Python's)."""
    if site is None:
        import ai_edge_litert

        lib = Path(ai_edge_litert.__file__).resolve().parent / "libLiteRt.so"
    else:
        lib = site / "ai_edge_litert" / "libLiteRt.so"
    if not lib.is_file():
        raise NativeBuildError(f"{lib} not found: the ai-edge-litert wheel (>= 2.x) ships the LiteRT C library there")
    return lib


def _tool(cmd: list[str], cwd: str) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise NativeBuildError(f"{e.filename} not found: stb_image.h comes from Debian's libstb-dev (apt-get and dpkg-deb)") from e
    if r.returncode != 0:
        raise NativeBuildError(f"{' '.join(cmd[:3])} failed (stb_image.h decodes --image): {(r.stderr or r.stdout).strip()[-300:]}")


def stb_dir(cache: Path | None = None) -> Path:
    """A folder holding ``stb_image.h``: the system's (Debian ``libstb-dev``), else the package unpacked once into ``cache``."""
    if (SYSTEM_STB / "stb_image.h").is_file():
        return SYSTEM_STB
    cache = cache or ROOT / ".cache" / "stb"
    if (cache / "stb_image.h").is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".stb-") as tmp:
        _tool(["apt-get", "download", "libstb-dev"], tmp)
        debs = list(Path(tmp).glob("libstb-dev_*.deb"))
        if not debs:
            raise NativeBuildError("apt-get download libstb-dev gave no package (stb_image.h decodes --image)")
        _tool(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")], tmp)
        header = Path(tmp) / "x" / "usr" / "include" / "stb" / "stb_image.h"
        if not header.is_file():
            raise NativeBuildError("libstb-dev holds no usr/include/stb/stb_image.h")
        staged = Path(tmp) / "stb"
        staged.mkdir()
        shutil.copy(header, staged / "stb_image.h")
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(staged, cache)
    return cache


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _compile(cmd: list[str], out: Path, env: dict[str, str] | None = None) -> Path:
    """Run ``cmd`` (which writes ``out``'s temporary name, appended last) and rename into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    os.close(fd)
    try:
        r = subprocess.run([*cmd, "-o", tmp], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise NativeBuildError(f"compiling {SOURCE.name} failed ({cmd[0]}): {(r.stderr or r.stdout).strip()[-600:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def build_x86(out: Path | None = None) -> Path:
    """``litert_run`` for this machine, linked to this Python's wheel (rebuilt when the source or library changes)."""
    lib = wheel_library()
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise NativeBuildError("no C compiler found (cc or gcc; Debian package gcc): the native runner is compiled at set-up")
    out = out or Path(sys.prefix) / "bin" / "litert_run"
    stamp = out.with_name(out.name + ".sha")
    stb = stb_dir()
    key = _digest(SOURCE, lib, stb / "stb_image.h")
    if out.is_file() and stamp.is_file() and stamp.read_text() == key:
        return out
    _compile([cc, *CFLAGS, "-isystem", str(stb), str(SOURCE), f"-L{lib.parent}", "-l:libLiteRt.so", f"-Wl,-rpath,{lib.parent}", "-lm"], out)
    stamp.write_text(key)
    return out


def _zig(cache: Path) -> list[str]:
    """The zig compiler from the ``ziglang`` wheel, unpacked once into ``cache``."""
    root = cache / f"zig-{ZIG_VERSION}"
    exe = root / "ziglang" / "zig"
    if not exe.is_file():
        with tempfile.TemporaryDirectory(dir=cache, prefix=".zig-") as tmp:
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    f"ziglang=={ZIG_VERSION}",
                    "-d",
                    tmp,
                ],
                capture_output=True,
                text=True,
            )
            wheels = list(Path(tmp).glob("ziglang-*.whl"))
            if r.returncode != 0 or not wheels:
                raise NativeBuildError(
                    f"pip download ziglang=={ZIG_VERSION} (the aarch64 cross compiler) failed: {r.stderr.strip()[-300:]}"
                )
            unpacked = Path(tmp) / "unpacked"
            with zipfile.ZipFile(wheels[0]) as z:
                z.extractall(unpacked)
            (unpacked / "ziglang" / "zig").chmod(0o755)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(unpacked, root)
    return [str(exe), "cc"]


def build_aarch64(site: Path, cache: Path) -> Path:
    """``litert_run`` for aarch64 linux (glibc 2.27+), linked to the aarch64 wheel's library in ``site``."""
    lib = wheel_library(site)
    out = cache / "native" / "litert_run"
    stamp = out.with_name("litert_run.sha")
    stb = stb_dir()
    key = _digest(SOURCE, lib, stb / "stb_image.h")
    if out.is_file() and stamp.is_file() and stamp.read_text() == key:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(cache / "zig-cache"), "ZIG_LOCAL_CACHE_DIR": str(cache / "zig-cache")}
    # The library's own references to libstdc++ are resolved at run time in the sysroot, not here.
    cmd = [
        *_zig(cache),
        "-target",
        "aarch64-linux-gnu.2.27",
        *CFLAGS,
        "-isystem",
        str(stb),
        str(SOURCE),
        str(lib),
        "-Wl,--allow-shlib-undefined",
        "-lm",
    ]
    _compile(cmd, out, env)
    stamp.write_text(key)
    return out
