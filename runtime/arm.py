"""ARM64 kernels on this x86 machine: the emulator set-up and the ARM runner (one more runner on the seam).

Phones run XNNPACK's ARM64 microkernels, not the x86 ones every other check uses. Here they run under
QEMU user-mode emulation (``docs/arm64.md``; measured route in the shared toolchain notes):

- **QEMU >= 8.1**: Debian trixie's ``qemu-user`` .deb (static binaries), fetched with ``apt-get
  download`` and unpacked with ``dpkg-deb -x``; nothing is installed system-wide. Debian 12's QEMU 7.2
  does not emulate ``/proc/cpuinfo`` (XNNPACK is then silently off) and mis-emulates SME.
- **An aarch64 Python 3.11**: Debian 12's arm64 .debs unpacked into a sysroot.
- **The aarch64 wheels**: ``ai-edge-litert`` (the x86 side's version), numpy and Pillow, by ``pip
  download`` for ``manylinux_2_27_aarch64`` (without that tag pip silently picks ai-edge-litert 1.4).

Everything goes into one cache folder (``.cache/arm64``, ``VIDEOSEAL_ARM64_CACHE`` to move it), built
in a temporary folder and renamed into place when complete, with ``toolchain.json`` recording every
package's name, version and sha256. A failed step is an ``ArmSetupError`` saying which and how to retry.

The CPU model selects the kernel family (confirmed from the executed symbols): ``cortex-a53`` NEON
(``mlal`` INT8 GEMMs), ``neoverse-n1`` dot product (``sdot``), ``neoverse-v1`` i8mm, ``max`` SME.
:class:`ArmRunner` runs a whole batch of inputs in one emulated process (start-up and model load cost
seconds under emulation).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.core.artifacts import sha256_file
from videoseal_litert.core.errors import ArmRunError, ArmSetupError
from videoseal_litert.runtime.runners import LiteRT, Opener, Outputs, open_runner

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = Path(__file__).resolve().parent
CPU_MODELS: dict[str, str] = {
    "cortex-a53": "NEON (no dot product): int8 GEMMs by widening multiply-accumulate",
    "neoverse-n1": "NEON dot product (sdot)",
    "neoverse-v1": "int8 matrix multiply (i8mm)",
    "max": "SME (scalable matrix extension)",
}
MIN_QEMU = (8, 1)
SYSROOT_PACKAGES = (
    "libc6 libgcc-s1 libstdc++6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib zlib1g libexpat1 "
    "libffi8 libssl3 libbz2-1.0 liblzma5 libcrypt1 libuuid1 libsqlite3-0 libtinfo6 libncursesw6 libreadline8"
).split()
RETRY = "run `make arm-check` again (a partial set-up is never kept); `rm -rf {cache}` starts over"
RUN_TIMEOUT_S = 1800


def cache_dir() -> Path:
    env = os.environ.get("VIDEOSEAL_ARM64_CACHE")
    return Path(env) if env else ROOT / ".cache" / "arm64"


@dataclass(frozen=True)
class Toolchain:
    """An installed emulation set-up (what :func:`ensure_toolchain` returns)."""

    root: Path

    @property
    def qemu(self) -> Path:
        return self.root / "qemu" / "usr" / "bin" / "qemu-aarch64"

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / "python3.11"

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def record(self) -> dict[str, Any]:
        return json.loads((self.root / "toolchain.json").read_text())

    def command(self, cpu: str, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run the aarch64 Python with ``args`` on CPU model ``cpu``."""
        if cpu not in CPU_MODELS:
            raise ArmRunError(f"unknown ARM64 CPU model {cpu!r}; one of {', '.join(CPU_MODELS)}")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(self.site),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHOME": str(self.sysroot / "usr"),
            # -cpu applies to the first process only; QEMU_CPU also reaches a child that is exec'd.
            "QEMU_CPU": cpu,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        return [str(self.qemu), "-L", str(self.sysroot), "-cpu", cpu, str(self.python), *args], env

    def native_command(self, cpu: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that start the aarch64 ``litert_run`` (the LiteRT C library of the
        aarch64 wheel) on CPU model ``cpu``; compiled once (``runtime/native_build.py``)."""
        from videoseal_litert.runtime.native_build import build_aarch64

        if cpu not in CPU_MODELS:
            raise ArmRunError(f"unknown ARM64 CPU model {cpu!r}; one of {', '.join(CPU_MODELS)}")
        exe = build_aarch64(self.site, self.root)
        env = {"QEMU_CPU": cpu, "LD_LIBRARY_PATH": str(self.site / "ai_edge_litert")}
        return [str(self.qemu), "-L", str(self.sysroot), "-cpu", cpu, str(exe)], env


# ---- set-up -------------------------------------------------------------------------------------


def _run(cmd: list[str], what: str, cache: Path, **kw: Any) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError as e:
        raise ArmSetupError(
            f"ARM64 set-up: {what}: {e.filename} not found (a Debian-based machine with apt-get and dpkg-deb is needed)"
        ) from e
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip()[-400:]
        raise ArmSetupError(f"ARM64 set-up: {what} failed ({tail}); " + RETRY.format(cache=cache))
    return r


def _mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb.debian.org when none is named)."""
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = f.read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s", text, re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def _apt(work: Path, cache: Path) -> list[str]:
    """apt-get with a private configuration: trixie (amd64, for QEMU) and bookworm (arm64, the sysroot)."""
    etc, lists, archives = work / "apt" / "etc", work / "apt" / "lists", work / "apt" / "cache"
    for d in (etc, lists / "partial", archives / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    mirror = _mirror()
    (etc / "sources.list").write_text(
        f"deb [arch=amd64 signed-by={keyring}] {mirror} trixie main\ndeb [arch=arm64 signed-by={keyring}] {mirror} bookworm main\n"
    )
    opts = [
        f"-oDir::Etc::SourceList={etc / 'sources.list'}",
        "-oDir::Etc::SourceParts=/nonexistent",
        f"-oDir::State::Lists={lists}",
        f"-oDir::Cache={archives}",
        "-oAPT::Architecture=amd64",
        "-oAPT::Architectures::=amd64",
        "-oAPT::Architectures::=arm64",
        "-oDebug::NoLocking=1",
        "-oAcquire::Retries=2",
    ]
    what = f"reading the Debian package lists (trixie, bookworm arm64) from {mirror}"
    r = _run(["apt-get", *opts, "update", "-qq"], what, cache)
    # apt-get update exits 0 when a fetch fails (a warning): the lists themselves say whether it worked.
    got = [p.name for p in lists.glob("*_Packages*")]
    if not all(any(f"_{suite}_" in n for n in got) for suite in ("trixie", "bookworm")):
        tail = (r.stderr or r.stdout).strip()[-300:]
        raise ArmSetupError(f"ARM64 set-up: {what} failed ({tail or 'no package lists'}); " + RETRY.format(cache=cache))
    return ["apt-get", *opts]


def _download_debs(apt: list[str], names: list[str], dest: Path, cache: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    _run([*apt, "download", *names], f"apt-get download {' '.join(names)}", cache, cwd=dest)
    return sorted(dest.glob("*.deb"))


def _qemu_version(qemu: Path, cache: Path) -> tuple[int, ...]:
    out = _run([str(qemu), "--version"], "running the unpacked qemu-aarch64", cache).stdout
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        raise ArmSetupError(f"ARM64 set-up: cannot read the QEMU version from {out[:200]!r}; " + RETRY.format(cache=cache))
    return tuple(int(g) for g in m.groups() if g is not None)


def _wheels(dest: Path, cache: Path) -> list[Path]:
    from importlib.metadata import version

    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"ai-edge-litert=={version('ai-edge-litert')}", f"numpy=={version('numpy')}", f"pillow=={version('pillow')}"]
    platforms = [a for p in ("manylinux_2_27_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64") for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", *platforms, "--python-version", "3.11"]
    _run([*cmd, "--implementation", "cp", "--abi", "cp311", "-d", str(dest), *pins], f"pip download {' '.join(pins)} (aarch64)", cache)
    return sorted(dest.glob("*.whl"))


def _entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def ensure_toolchain(cache: Path | None = None) -> Toolchain:
    """The emulation set-up, made once into ``cache`` (default :func:`cache_dir`) and reused."""
    cache = cache or cache_dir()
    if (cache / "toolchain.json").is_file():
        return Toolchain(cache)
    if not Path("/usr/share/keyrings/debian-archive-keyring.gpg").is_file():
        raise ArmSetupError(
            "ARM64 set-up: Debian's archive keyring is missing (package debian-archive-keyring); a Debian machine is needed"
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    log.info("ARM64 set-up into %s (once; about 85 MB)", cache)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=f".{cache.name}-") as tmp:
        work = Path(tmp)
        apt = _apt(work, cache)
        qemu_debs = _download_debs(apt, ["qemu-user"], work / "debs-qemu", cache)
        sys_debs = _download_debs(apt, [f"{p}:arm64" for p in SYSROOT_PACKAGES], work / "debs-arm64", cache)
        for deb in qemu_debs:
            _run(["dpkg-deb", "-x", str(deb), str(work / "qemu")], f"unpacking {deb.name}", cache)
        for deb in sys_debs:
            _run(["dpkg-deb", "-x", str(deb), str(work / "sysroot")], f"unpacking {deb.name}", cache)
        tc = Toolchain(work)
        # The package holds every target (about 450 MB) and binfmt links to them; one binary is needed.
        keep = work / "qemu-aarch64"
        if tc.qemu.is_file():
            os.replace(tc.qemu, keep)
        shutil.rmtree(work / "qemu")
        tc.qemu.parent.mkdir(parents=True)
        if keep.is_file():
            os.replace(keep, tc.qemu)
        for docs in ("doc", "man", "lintian"):  # documentation (and its dangling links) is not needed
            shutil.rmtree(tc.sysroot / "usr" / "share" / docs, ignore_errors=True)
        if not tc.qemu.is_file():
            raise ArmSetupError(
                f"ARM64 set-up: {qemu_debs[0].name if qemu_debs else 'qemu-user'} has no usr/bin/qemu-aarch64; " + RETRY.format(cache=cache)
            )
        qv = _qemu_version(tc.qemu, cache)
        if qv < MIN_QEMU:
            raise ArmSetupError(
                f"ARM64 set-up: QEMU {'.'.join(map(str, qv))} is older than 8.1 (no /proc/cpuinfo emulation: XNNPACK would be off)"
            )
        wheels = _wheels(work / "wheels", cache)
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                z.extractall(tc.site)
        cmd, env = tc.command("cortex-a53", ["-c", "import numpy, PIL, ai_edge_litert.interpreter; print(numpy.__version__)"])
        _run(cmd, "importing numpy, Pillow and ai-edge-litert under the aarch64 Python", cache, env=env, timeout=600)
        record = {
            "qemu_version": ".".join(map(str, qv)),
            "debian_mirror": _mirror(),
            "qemu": [_entry(d) for d in qemu_debs],
            "sysroot": [_entry(d) for d in sys_debs],
            "wheels": [_entry(w) for w in wheels],
            "cpu_models": CPU_MODELS,
        }
        for d in ("apt", "debs-qemu", "debs-arm64", "wheels"):
            shutil.rmtree(work / d, ignore_errors=True)
        (work / "toolchain.json").write_text(json.dumps(record, indent=1) + "\n")
        if cache.exists():
            shutil.rmtree(cache)  # an incomplete earlier set-up (no toolchain.json)
        os.replace(work, cache)
        work.mkdir()  # for TemporaryDirectory's clean-up
    log.info(
        "ARM64 set-up done: QEMU %s, %d arm64 packages, %d wheels", record["qemu_version"], len(record["sysroot"]), len(record["wheels"])
    )
    return Toolchain(cache)


# ---- the runner ---------------------------------------------------------------------------------


class ArmRunner:
    """A ``.tflite`` on XNNPACK's ARM64 kernels for one emulated CPU model (the runner seam's protocol).

    ``run_many`` runs a batch in one emulated process; ``__call__`` is a batch of one. Input shapes and
    I/O details come from the same file opened on x86 (they do not depend on the CPU)."""

    def __init__(self, path: str | Path, num_threads: int, cpu: str, toolchain: Toolchain, every_output: bool = False) -> None:
        self.path, self.threads, self.cpu, self.toolchain = Path(path), num_threads, cpu, toolchain
        self.every_output = every_output  # also every subgraph output, raw, under "/<tensor name>" keys
        self._x86: LiteRT = open_runner(self.path, 1)
        self._delegation: dict[str, Any] | None = None
        self.label = f"ARM64 {cpu} {self.path.name}"

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return self._x86.input_shapes

    def io(self) -> dict[str, list[dict[str, Any]]]:
        return self._x86.io()

    def delegation(self) -> dict[str, Any] | None:
        """The op placement seen by the last emulated run (None before one)."""
        return self._delegation

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Outputs:
        return self.run_many([inputs])[0]

    def run_many(self, batch: Sequence[Mapping[str, np.ndarray]]) -> list[Outputs]:
        with tempfile.TemporaryDirectory(prefix="arm-run-") as tmp:
            src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
            np.savez(src, **{f"{i}/{k}": np.asarray(v) for i, x in enumerate(batch) for k, v in x.items()})
            args = [str(RUNTIME / "arm_worker.py"), str(self.path), str(self.threads), str(src), str(dst)]
            cmd, env = self.toolchain.command(self.cpu, args + (["--every-output"] if self.every_output else []))
            try:
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired as e:
                raise ArmRunError(f"{self.path.name} on {self.cpu}: no result after {RUN_TIMEOUT_S} s under emulation") from e
            if r.returncode != 0 or not dst.is_file():
                tail = (r.stderr or r.stdout).strip()[-600:]
                raise ArmRunError(f"{self.path.name} on emulated {self.cpu} exited with {r.returncode}: {tail}")
            with np.load(dst) as out:
                self._delegation = json.loads(out["delegation"].tobytes())
                rows: list[Outputs] = [{} for _ in batch]
                for key in out.files:
                    if key != "delegation":
                        i, _, name = key.partition("/")
                        rows[int(i)][name] = out[key]
        return rows


def arm_opener(cpu: str, toolchain: Toolchain) -> Opener:
    """An opener (``runners.Opener``) for the stages: every file it opens runs on emulated ``cpu``."""

    def opener(path: Path, threads: int) -> ArmRunner:
        return ArmRunner(path, threads, cpu, toolchain)

    return opener


def bundle_selftests(bundle: Path, cpus: Sequence[str], scripts: Sequence[str], toolchain: Toolchain | None = None) -> list[dict[str, Any]]:
    """Run a bundle's torch-free self-tests (``run_extractor.py --selftest``, ...) on each CPU model twice: under the
    aarch64 Python (the interpreter's ARM64 kernels) and through the aarch64 LiteRT C library (``litert_run``, run
    from this Python); ArmRunError naming the CPU, the runtime and the failing vectors when one fails."""
    tc = toolchain or ensure_toolchain()
    done = []
    for cpu in cpus:
        native, native_env = tc.native_command(cpu)
        for script in scripts:
            # --verified-only: a file shipped with --allow-unverified is named, not judged (the bundle says so everywhere).
            cmd, env = tc.command(cpu, [script, "--selftest", "--verified-only"])
            runs = [
                ("aarch64 Python", cmd, env),
                (
                    "LiteRT C library",
                    [sys.executable, script, "--selftest", "--verified-only", "--native", " ".join(native)],
                    {**os.environ, **native_env},
                ),
            ]
            for runtime, c, e in runs:
                r = subprocess.run(c, env=e, cwd=bundle, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
                last = (r.stdout.strip().splitlines() or [""])[-1]
                if r.returncode != 0:
                    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL")][:5]
                    raise ArmRunError(
                        f"{script} --selftest on emulated {cpu} ({runtime}): {last or (r.stderr.strip()[-300:])}; " + "; ".join(fails)
                    )
        done.append(
            {
                "cpu": f"ARM64 {cpu} (emulated, QEMU {tc.record['qemu_version']})",
                "kernels": CPU_MODELS[cpu],
                "selftests": list(scripts),
                "runtimes": ["ai-edge-litert Python interpreter (aarch64)", "LiteRT C library libLiteRt.so (aarch64) via litert_run"],
                "passed": True,
            }
        )
        log.info("bundle self-tests passed on emulated %s (Python and the C library)", cpu)
    return done
