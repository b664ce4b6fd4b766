"""``python -m videoseal_litert <command> ...``: the same as the ``videoseal-litert`` console script."""

from videoseal_litert.cli import main

raise SystemExit(main())
