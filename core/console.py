"""What the user sees: our progress and summaries on the terminal; everything else in a log file.

``captured(log)`` points file descriptors 1 and 2 at ``log`` for the duration of a command, so the
converters' and quantizer's own output (Python prints, ``logging``, ``warnings``, absl and C++
``std::cerr``, which no Python-level redirect reaches) lands in the file. Our own lines go to
duplicates of the terminal's descriptors taken before the switch: ``say`` for summaries,
``progress`` for loops. On failure the log's last lines and its path are shown; ``VERBOSE=1``
(``VIDEOSEAL_VERBOSE=1``) turns capturing off.

Written by hand rather than with ``contextlib.redirect_stdout``: that only rebinds ``sys.stdout``,
and most of the chatter comes from native code writing to fd 2.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO, TypeVar

T = TypeVar("T")
VERBOSE_ENV = "VIDEOSEAL_VERBOSE"
TAIL_LINES = 25
PLAIN_EVERY_S = 15.0

_term_out: TextIO | None = None  # the terminal's stdout while capturing
_term_err: TextIO | None = None  # the terminal's stderr while capturing
_last_log: Path | None = None  # the last command's log file (for what native code prints at exit)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "no", "false")


def out_stream() -> TextIO:
    return _term_out or sys.stdout


def err_stream() -> TextIO:
    return _term_err or sys.stderr


def say(text: str = "") -> None:
    """A line (or table) for the user: always on the terminal, also in the log while capturing."""
    print(text, file=out_stream(), flush=True)
    if _term_out is not None:
        with contextlib.suppress(OSError):
            os.write(1, (text + "\n").encode())  # fd 1 is the log file while capturing


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "steps") -> Iterator[T]:
    """``items``, with one progress bar (tqdm) on a terminal, or plain lines every PLAIN_EVERY_S
    seconds and at the end when the output is a file (CI logs); counts say what they count (``unit``)."""
    stream = err_stream()
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    if stream.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, unit=f" {unit}", file=stream, leave=False, dynamic_ncols=True)
        return
    t0 = last = time.time()
    n = 0
    for n, item in enumerate(items, 1):  # noqa: B007 - n is read after the loop
        yield item
        now = time.time()
        if now - last >= PLAIN_EVERY_S:
            last = now
            eta = f", about {(now - t0) / n * (total - n):.0f} s left" if total else ""
            print(f"  {desc}: {n}{f'/{total}' if total else ''} {unit} ({now - t0:.0f} s so far{eta})", file=stream, flush=True)
    if time.time() - t0 >= PLAIN_EVERY_S:
        print(f"  {desc}: {n} {unit} done in {time.time() - t0:.0f} s", file=stream, flush=True)


@contextlib.contextmanager
def captured(log_path: Path) -> Iterator[Path | None]:
    """Send everything written to fds 1 and 2 (and Python logging and warnings) to ``log_path``."""
    global _term_out, _term_err
    if verbose() or _term_out is not None:
        yield None
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    global _last_log
    _last_log = log_path
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    (_term_out, own_out), (_term_err, own_err) = _terminal(sys.stdout, 1, saved[0]), _terminal(sys.stderr, 2, saved[1])
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    handler = logging.StreamHandler(sys.stderr)  # fd 2: the log file now
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root.handlers, root.level = [handler], logging.INFO
    logging.captureWarnings(True)
    failed = named = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield log_path
    except BaseException as e:
        # A named error or a signal says enough in its one line; anything else shows the log's tail.
        from videoseal_litert.core.errors import PipelineError
        from videoseal_litert.core.exit import Terminated

        failed = not isinstance(e, PipelineError | KeyboardInterrupt | Terminated)
        named = not failed
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.captureWarnings(False)
        root.handlers, root.level = old_handlers, old_level
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f, own in ((_term_out, own_out), (_term_err, own_err)):
            if own:
                f.close()
        os.close(saved[0])
        os.close(saved[1])
        _term_out = _term_err = None
        if failed:
            show_tail(log_path)
        elif named:
            print(f"log: {log_path}", file=sys.stderr, flush=True)


def _terminal(stream: TextIO, fd: int, saved: int) -> tuple[TextIO, bool]:
    """Where our own lines go while fd ``fd`` points at the log: a duplicate of the terminal's
    descriptor, or ``stream`` itself when Python's stream is not that descriptor (pytest's capture,
    a notebook); the flag says whether we opened it."""
    try:
        if stream.fileno() == fd:
            return os.fdopen(os.dup(saved), "w", buffering=1), True
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    return stream, False


def exit_to_log() -> None:
    """Once the command has said everything: what native code prints while the process shuts down
    (LiteRT's CompiledModel destroys its accelerators at exit, one INFO line each) goes to the
    command's log file too, not the terminal. Nothing changes with VERBOSE=1 or without a log."""
    if verbose() or _last_log is None or _term_out is not None:
        return
    with contextlib.suppress(OSError):
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(_last_log, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def show_tail(log_path: Path, n: int = TAIL_LINES) -> None:
    """The last ``n`` lines of a stage's log, then its path (before the error line)."""
    with contextlib.suppress(OSError):
        lines = log_path.read_text(errors="replace").splitlines()[-n:]
        if lines:
            print(f"--- last {len(lines)} lines of {log_path} ---", file=sys.stderr)
            print("\n".join(lines), file=sys.stderr)
        print(f"--- full log: {log_path} ---", file=sys.stderr, flush=True)


@contextlib.contextmanager
def working(desc: str, detail: Callable[[], str] | None = None) -> Iterator[None]:
    """For one long call with no count to show (a conversion, one quantizer call): elapsed time (and
    ``detail()``, e.g. rows written so far), as a bar on a terminal or a plain line every PLAIN_EVERY_S
    seconds otherwise."""
    import threading

    stream, t0, done = err_stream(), time.time(), threading.Event()
    tty = stream.isatty()

    def tick() -> None:
        while not done.wait(1.0 if tty else PLAIN_EVERY_S):
            more = f", {detail()}" if detail else ""
            if tty:
                print(f"\r  {desc}: {time.time() - t0:.0f} s{more}", end="", file=stream, flush=True)
            else:
                print(f"  {desc}: {time.time() - t0:.0f} s so far{more}", file=stream, flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if tty:
            print("\r\033[K", end="", file=stream, flush=True)
