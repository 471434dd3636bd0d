"""``uv run python -m bench --quick`` (under 2 minutes) or ``--full`` (under 10)."""

from bench.run import main

raise SystemExit(main())
