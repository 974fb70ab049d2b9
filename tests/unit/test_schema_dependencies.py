"""The schema is the bottom layer: the wire and record types everything else imports, importing nothing above."""

from __future__ import annotations

import subprocess
import sys

SCHEMA = (
    "cdp_actors.schema.events",
    "cdp_actors.schema.identity",
    "cdp_actors.schema.identity_types",
    "cdp_actors.schema.records",
)
ABOVE = ("cdp_actors.identity", "cdp_actors.profiles", "cdp_actors.forwarding", "cdp_actors.intake")


def test_the_schema_imports_nothing_from_the_packages_that_use_it() -> None:
    script = (
        f"import importlib, sys\nfor name in {SCHEMA!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({ABOVE!r})))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
