"""How every command ends: exit codes, the one error model (``run_main``) and signal handling.

A named error (``core/errors.py``) prints one line and exits 2; SIGINT and SIGTERM raise in the main
thread so that ``finally`` blocks remove temporary files, and exit 130 / 143; anything else is a bug
(exit 3). The command line (``videoseal_litert/cli.py``) runs every command through ``run_main``.
"""

from __future__ import annotations

from collections.abc import Callable

from videoseal_litert.core.errors import PipelineError


class Terminated(BaseException):  # noqa: N818 - the signal's name, like KeyboardInterrupt
    """Raised in the main thread by SIGTERM, so that ``finally`` blocks remove temporary files."""


# Exit codes of every command (docs/errors.md).
EXIT_OK = 0
EXIT_NAMED_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_SIGINT = 130  # 128 + SIGINT, as shells report it
EXIT_SIGTERM = 143  # 128 + SIGTERM
DEBUG_ENV = "VIDEOSEAL_DEBUG"


def debug_enabled() -> bool:
    import os

    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "no", "false")


_received: list[int] = []
_depth: list[int] = []


def _on_signal(signum: int, frame: object) -> None:
    _received.append(signum)
    raise_if_signalled()


def raise_if_signalled() -> None:
    """Raise KeyboardInterrupt or Terminated if a signal arrived under ``run_main``.

    The handler raises at once; but an exception raised while Python runs a garbage-collector
    callback (jax registers one) is printed and dropped, so ``atomic_path`` asks again before it
    renames a finished file into place.
    """
    import signal

    if _received:
        raise KeyboardInterrupt() if _received[-1] == signal.SIGINT else Terminated()


def stopped_as_asked() -> None:
    """A command whose normal end is a signal (``make web`` serving until Ctrl-C) took it: the exit is 0, not 130/143."""
    _received.clear()


def run_main(body: Callable[[], int | None]) -> int:
    """Run a command's body under the one error model and return its exit code.

    A named error prints ``error: <Name>: <message>`` and exits 2; SIGINT exits 130 and SIGTERM 143
    after ``finally`` blocks have removed temporary files; anything else is a bug and exits 3 with
    its type and message. No traceback unless ``VIDEOSEAL_DEBUG=1`` (``--debug``).
    """
    import signal
    import sys
    import threading
    import traceback

    if _depth:  # a command's main called by the one command line: the outer call handles errors
        return body() or EXIT_OK
    _received.clear()
    _depth.append(1)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # Also SIGINT: a job started in the background of a non-interactive shell inherits it ignored.
        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    debug = debug_enabled()

    def fail(name: str, message: str, code: int) -> int:
        if debug:
            traceback.print_exc()
        print(f"error: {name}: {message}", file=sys.stderr, flush=True)
        return code

    try:
        code = body() or EXIT_OK
        raise_if_signalled()  # a signal whose exception a library swallowed still ends the command
        return code
    except PipelineError as e:
        return fail(type(e).__name__, str(e), EXIT_NAMED_ERROR)
    except KeyboardInterrupt:
        return fail(
            "Interrupted", "stopped by SIGINT; finished artifacts are kept and nothing half-written is left; rerun to complete", EXIT_SIGINT
        )
    except Terminated:
        return fail(
            "Terminated",
            "stopped by SIGTERM; finished artifacts are kept and nothing half-written is left; rerun to complete",
            EXIT_SIGTERM,
        )
    except MemoryError:
        return fail(
            "OutOfMemoryError", "the machine ran out of memory; close other programs or use a machine with more RAM", EXIT_NAMED_ERROR
        )
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return fail("FileAccessError", f"{e.strerror or e}{where}", EXIT_NAMED_ERROR)
    except Exception as e:  # noqa: BLE001 - the last line of the error model: a bug, said as one
        return fail(
            "InternalError",
            f"{type(e).__name__}: {e} (unexpected: please report it; rerun with --debug or {DEBUG_ENV}=1 for the traceback)",
            EXIT_INTERNAL_ERROR,
        )
    finally:
        _depth.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
