"""The HAProxy that Serve runs for the test session's Ray reads the settings `ingress_env` gave it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.conftest import demo_config
from tests.support import wait_for


def haproxy_config() -> str:
    state = Path(os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])  # Serve writes <state>/<node id>/haproxy.cfg
    config = wait_for(lambda: next(state.glob("*/haproxy.cfg"), None), what=f"a haproxy.cfg under {state}")
    return config.read_text()


def test_haproxy_uses_our_health_checks_and_our_own_fallback_port(platform, receiver) -> None:
    platform(demo_config(receiver.url))
    config = haproxy_config()
    checks = re.findall(r"^\s*default-server .*$", config, re.MULTILINE)
    fall, fastinter = (os.environ[f"RAY_SERVE_HAPROXY_HEALTH_CHECK_{name}"] for name in ("FALL", "FASTINTER"))
    assert checks and all(f"fall {fall} " in line and f"fastinter {fastinter} " in line for line in checks), checks
    backups = re.findall(r"^\s*server \S+ (\S+) check backup$", config, re.MULTILINE)
    assert backups and set(backups) == {f"127.0.0.1:{os.environ['RAY_SERVE_FALLBACK_PROXY_HTTP_PORT']}"}
