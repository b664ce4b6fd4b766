"""``videoseal-litert <command> [options]``: the one command line over every stage, with one parser.

Every command is a subcommand of one ``argparse`` parser; the options that mean the same thing
(``--model``, ``--part``, ``--ckpt``, ``--random-init``, ``--allow-*``, ``--out``, ``--images``,
``--threads``, ``--force``, ``--variants``) come from shared parent parsers, so they are spelled and
checked the same everywhere. The Makefile's targets call these commands. Every command ends in the
one error model of ``core.exit.run_main``: ``error: <Name>: <message>`` on stderr and exit code
2 for a named error (a bad option included), 3 for an unexpected one (a bug), 130 after SIGINT and
143 after SIGTERM, with no traceback unless ``--debug`` (or ``VIDEOSEAL_DEBUG=1``) is given.

Building the parser imports nothing heavy: ``videoseal-litert --help`` works before torch is installed.
"""

from __future__ import annotations

import logging
import os
import sys

# The command table and the parser (parsers.py), the handlers (handlers.py): re-exported for the entry point and tests.
from videoseal_litert import handlers
from videoseal_litert.core.exit import DEBUG_ENV, run_main
from videoseal_litert.parsers import COMMANDS, MODEL, build_parser

__all__ = ["COMMANDS", "MODEL", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help", "help"):
        parser.print_help()
        return 0

    def body() -> None:
        try:
            a = parser.parse_args(argv)
        except SystemExit as e:  # --help of a command
            if e.code in (0, None):
                return
            raise
        if not hasattr(a, "part"):
            a.part = None
        a.argv = argv[1:]  # as typed, for records that name the command (train-tiny)
        if hasattr(a, "threads"):  # --threads holds for PyTorch as for the interpreter
            import torch

            torch.set_num_threads(a.threads)
        handler = COMMANDS[a.command][3]
        getattr(handlers, f"cmd_{handler}")(a)

    import atexit

    from videoseal_litert.core.console import exit_to_log

    atexit.register(exit_to_log)  # at shutdown, after every line of ours: native code's last words go to the log
    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
