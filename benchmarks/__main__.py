"""`python -m benchmarks ingest ...` is `cdp bench ingest ...`."""

import sys

from cdp_actors.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
