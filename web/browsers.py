"""The browsers and JavaScript packages ``make web-check`` drives, set up without root (``make web-setup``).

- **LiteRT.js and the driver**: ``npm ci`` in ``web/`` from the committed ``package-lock.json``
  (``@litertjs/core`` 2.5.3 for the page, ``puppeteer-core`` for the check). Node.js 20 and npm are needed.
- **Headless Chromium and Firefox ESR**: Debian's ``chromium-headless-shell`` and ``firefox-esr`` with
  whatever this machine lacks of their dependencies (what ``apt-get -s install`` would install), fetched
  with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into ``.cache/browsers`` (about 170 MB
  downloaded); run with ``LD_LIBRARY_PATH`` into the unpacked tree. Nothing is installed system-wide.
  Where the packages are already installed, their binaries are used; ``CHROMIUM=`` and ``FIREFOX=`` name
  any other binary.

Why puppeteer-core rather than playwright-core: Playwright drives only its own patched Firefox build
(which cannot be downloaded here); puppeteer-core drives a stock Firefox through WebDriver BiDi and
Chromium through CDP, so one driver covers both Debian browsers.

The set-up is made in a temporary folder and renamed into place when complete, with ``browsers.json``
recording each package's name, version and sha256. A failure is a ``BrowserSetupError`` naming the step
and what to install instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from videoseal_litert.core.artifacts import sha256_file
from videoseal_litert.core.errors import BrowserSetupError
from videoseal_litert.core.npm import npm_ci

WEB = Path(__file__).resolve().parent
ROOT = WEB.parent
PACKAGES = {"chromium": "chromium-headless-shell", "firefox": "firefox-esr"}
BINARIES = {"chromium": "usr/lib/chromium/chromium-headless-shell", "firefox": "usr/lib/firefox-esr/firefox-esr"}
OVERRIDE = {"chromium": "CHROMIUM", "firefox": "FIREFOX"}
INSTEAD = "`apt-get install chromium-headless-shell firefox-esr` (as root), or name binaries with CHROMIUM= and FIREFOX="


@dataclass(frozen=True)
class Browser:
    name: str
    executable: Path
    env: dict[str, str]


def cache_dir() -> Path:
    env = os.environ.get("VIDEOSEAL_BROWSER_CACHE")
    return Path(env) if env else ROOT / ".cache" / "browsers"


def ensure_node_modules() -> Path:
    """``web/node_modules`` from the lock file (``npm ci``), once per lock file."""
    return npm_ci(WEB, WEB / "node_modules" / "@litertjs" / "core", BrowserSetupError, "the web page and make web-check")


def _lib_dirs(root: Path) -> list[str]:
    return sorted({str(p.parent) for base in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu") for p in (root / base).rglob("*.so*")})


def _lib_env(root: Path) -> dict[str, str]:
    old = os.environ.get("LD_LIBRARY_PATH")
    return {"LD_LIBRARY_PATH": ":".join(_lib_dirs(root) + ([old] if old else []))}


def _run(cmd: list[str], what: str, **kw: object) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    except FileNotFoundError as e:
        raise BrowserSetupError(f"browser set-up: {what}: {e.filename} not found (apt-get and dpkg-deb are needed); or {INSTEAD}") from e
    if r.returncode != 0:
        raise BrowserSetupError(f"browser set-up: {what} failed ({(r.stderr or r.stdout).strip()[-300:]}); or {INSTEAD}")
    return r


def _to_install() -> list[str]:
    """The packages ``apt-get install`` would add for both browsers (none when both are installed)."""
    r = _run(
        ["apt-get", "-s", "-oDebug::NoLocking=1", "install", "--no-install-recommends", *PACKAGES.values()],
        "asking apt which packages the browsers need",
    )
    return [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("Inst ")]


def ensure_browsers(names: tuple[str, ...] = tuple(PACKAGES)) -> dict[str, Browser]:
    """Each browser in ``names``: a binary named by CHROMIUM=/FIREFOX=, the system's, or the unpacked Debian one."""
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        raise BrowserSetupError(f"unknown browser(s) {', '.join(unknown)}; choose from {', '.join(PACKAGES)}")
    found: dict[str, Browser] = {}
    for n in names:
        if os.environ.get(OVERRIDE[n]):
            exe = Path(os.environ[OVERRIDE[n]])
            if not exe.is_file():
                raise BrowserSetupError(f"{OVERRIDE[n]}={exe} does not exist")
            found[n] = Browser(n, exe, {})
        elif (Path("/") / BINARIES[n]).is_file():
            found[n] = Browser(n, Path("/") / BINARIES[n], {})
    if len(found) == len(names):
        return found
    cache = cache_dir()
    if not (cache / "browsers.json").is_file():
        _unpack(cache)
    root = cache / "root"
    for n in names:
        if n not in found:
            exe = root / BINARIES[n]
            if not exe.is_file():
                raise BrowserSetupError(f"{exe} is missing from the browser set-up: `rm -rf {cache}` and run `make web-setup` again")
            found[n] = Browser(n, exe, _lib_env(root))
    return found


def launcher(b: Browser) -> Path:
    """A command that starts ``b`` as it is: its binary, or (for an unpacked browser, which needs its libraries on
    ``LD_LIBRARY_PATH``) a small script in the cache's ``bin/`` that sets them and runs it."""
    if not b.env:
        return b.executable
    script = cache_dir() / "bin" / b.name
    script.parent.mkdir(parents=True, exist_ok=True)
    dirs = ":".join(_lib_dirs(cache_dir() / "root"))
    text = f'#!/bin/sh\n# {b.name} from make web-setup, with its unpacked libraries\nLD_LIBRARY_PATH="{dirs}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "{b.executable}" "$@"\n'
    if not script.is_file() or script.read_text() != text:
        tmp = script.with_name(f".{script.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, script)
    return script


def _unpack(cache: Path) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=f".{cache.name}-") as tmp:
        work = Path(tmp)
        names = _to_install()
        debs = work / "debs"
        debs.mkdir()
        if names:
            _run(["apt-get", "-oDebug::NoLocking=1", "download", *names], f"apt-get download {' '.join(names)}", cwd=debs)
        record = []
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(work / "root")], f"unpacking {deb.name}")
            name, version = deb.stem.split("_")[:2]
            record.append(
                {"package": name, "version": version.replace("%3a", ":"), "sha256": sha256_file(deb), "bytes": deb.stat().st_size}
            )
        for docs in ("doc", "man", "lintian"):
            shutil.rmtree(work / "root" / "usr" / "share" / docs, ignore_errors=True)
        shutil.rmtree(debs)
        (work / "browsers.json").write_text(json.dumps({"packages": record}, indent=1) + "\n")
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(work, cache)
        work.mkdir()  # for TemporaryDirectory's clean-up


def versions() -> dict[str, str]:
    """The unpacked browser packages' versions (empty when the system's or named binaries are used)."""
    f = cache_dir() / "browsers.json"
    if not f.is_file():
        return {}
    return {p["package"]: p["version"] for p in json.loads(f.read_text())["packages"] if p["package"] in PACKAGES.values()}
