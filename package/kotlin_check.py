"""The bundle's Kotlin, compiled and run on the JVM (``make test``): ``android/*.kt`` with small stand-ins for the
Android and LiteRT classes they call (``android/jvm/stubs``) and a harness (``android/jvm/Harness.kt``) that runs their
pure parts (resize, JND, blend, message and bit-order helpers, decoding) on files Python writes.

The compiler is npm's ``kotlin-compiler`` (pinned in ``android/jvm/package-lock.json``), installed by ``npm ci`` into
``.cache/kotlin``; a JDK (``java``) runs it and the harness. The jar is rebuilt when any Kotlin source changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from videoseal_litert.core.errors import KotlinSetupError
from videoseal_litert.core.npm import npm_ci

ANDROID = Path(__file__).resolve().parent / "android"
JVM = ANDROID / "jvm"
ROOT = ANDROID.parent.parent


def cache_dir() -> Path:
    return Path(os.environ.get("VIDEOSEAL_KOTLIN_CACHE", ROOT / ".cache" / "kotlin"))


def sources() -> list[Path]:
    return sorted(ANDROID.glob("*.kt")) + sorted(JVM.rglob("*.kt"))


def ensure_kotlinc() -> Path:
    """``kotlinc-jvm`` from the lock file (``npm ci`` into the cache, once per lock file)."""
    if shutil.which("java") is None:
        raise KotlinSetupError("a JDK is needed to compile and run the bundle's Kotlin (Debian: openjdk-17-jdk-headless)")
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for f in ("package.json", "package-lock.json"):  # installed in the cache, not beside the sources
        if not (cache / f).is_file() or (cache / f).read_bytes() != (JVM / f).read_bytes():
            shutil.copy(JVM / f, cache / f)
    kotlinc = cache / "node_modules" / "kotlin-compiler" / "bin" / "kotlinc-jvm"
    npm_ci(cache, kotlinc, KotlinSetupError, "the Kotlin compiler (kotlin-compiler from npm)")
    return kotlinc


def harness_jar() -> Path:
    """The harness and the bundle's Kotlin compiled into one runnable jar (rebuilt when a source changes)."""
    srcs = sources()
    h = hashlib.sha256()
    for p in srcs:
        h.update(p.name.encode() + p.read_bytes())
    jar = cache_dir() / f"harness-{h.hexdigest()[:16]}.jar"
    if jar.is_file():
        return jar
    kotlinc = ensure_kotlinc()
    tmp = jar.with_name(f".{jar.name}.tmp.jar")
    r = subprocess.run([str(kotlinc), "-nowarn", *map(str, srcs), "-include-runtime", "-d", str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise KotlinSetupError(f"the bundle's Kotlin does not compile: {(r.stderr or r.stdout).strip()[-1500:]}")
    tmp.replace(jar)
    return jar


def run_harness(*args: object) -> str:
    """The harness's output for one command (see ``android/jvm/Harness.kt``)."""
    r = subprocess.run(["java", "-jar", str(harness_jar()), *map(str, args)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise KotlinSetupError(f"the Kotlin harness failed on {args[0]}: {(r.stderr or r.stdout).strip()[-800:]}")
    return r.stdout
