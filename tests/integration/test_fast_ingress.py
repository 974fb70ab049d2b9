"""`cdp serve --fast-ingress` (Serve's HAProxy ingress): batches in and out, a kill -9 and a restart on the same
port, then a clean stop."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.integration.test_recovery import PATIENT_RETRY, check_profiles, kill_9, send_load, start_serve
from tests.support import Api, Receiver, free_port, wait_for


def test_haproxy_ingress_takes_batches_survives_a_kill_9_restart_and_stops_cleanly(tmp_path: Path) -> None:
    sink = Receiver().start()
    config = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    config["outputs"][0]["settings"]["url"] = sink.url
    config["retry"] = PATIENT_RETRY
    config_path, data_dir, port = tmp_path / "workspace.yaml", tmp_path / "data", free_port()
    config_path.write_text(yaml.safe_dump(config))
    api = Api(port)
    process = start_serve(config_path, data_dir, port, "--fast-ingress")
    try:
        sent = send_load(api, users=10, requests_=5, per_request=10, tag="haproxy")
        kill_9(process)
        process = start_serve(config_path, data_dir, port, "--fast-ingress")  # the port is free for it again
        sent += send_load(api, users=10, requests_=5, per_request=10, tag="haproxy")
        wanted = {b["source_request_id"] for b in sent}
        wait_for(lambda: {b["source_request_id"] for b in sink.bodies()} >= wanted, timeout=120,
                 what="every accepted batch delivered")  # fmt: skip
        wait_for(api.settled, timeout=60, what="outboxes drained")
        check_profiles(api, sink, sent)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, process.stdout.read().decode()
    finally:
        if process.poll() is None:
            kill_9(process)
        sink.stop()
