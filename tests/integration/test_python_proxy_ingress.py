"""`cdp serve --ingress proxy` (Serve's Python proxy instead of the default HAProxy): batches in and out, a kill -9
and a restart on the same port, then a clean stop. The default ingress goes through the same in test_recovery.py."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.integration.test_recovery import (
    PATIENT_RETRY,
    check_profiles,
    kill_9,
    send_load,
    start_serve,
    wait_delivered,
    workspace_file,
)
from tests.support import Api, Receiver


def test_python_proxy_ingress_takes_batches_survives_a_kill_9_restart_and_stops_cleanly(tmp_path: Path) -> None:
    sink = Receiver().start()
    config_path, data_dir, port = workspace_file(tmp_path, sink.url, retry=PATIENT_RETRY)
    api = Api(port)
    process = start_serve(config_path, data_dir, port, "--ingress", "proxy")
    try:
        sent = send_load(api, users=10, requests_=5, per_request=10, tag="proxy")
        kill_9(process)
        process = start_serve(config_path, data_dir, port, "--ingress", "proxy")  # the port is free for it again
        sent += send_load(api, users=10, requests_=5, per_request=10, tag="proxy")
        wait_delivered(api, sink, sent)
        check_profiles(api, sink, sent)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, process.stdout.read().decode()
    finally:
        if process.poll() is None:
            kill_9(process)
        sink.stop()
