from videoseal_litert.convert.cli import main

raise SystemExit(main())
