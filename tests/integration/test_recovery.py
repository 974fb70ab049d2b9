"""Invariant 1: after a kill -9, every acknowledged batch is applied exactly once and delivered."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import ray
import requests
import yaml

from cdp_actors import handles
from tests.conftest import ROOT, demo_config
from tests.samples import batch, custom
from tests.support import DEMO_AUTH, Api, Receiver, free_port, wait_for

PATIENT_RETRY = {"max_attempts": 1000, "base_delay_s": 0.05, "max_delay_s": 0.3, "request_timeout_s": 2}
T0 = 1_700_000_000_000


def send_load(api: Api, users: int, requests_: int, per_request: int, tag: str) -> list[dict]:
    sent = []
    for r in range(requests_):
        bodies = []
        for b in range(per_request):
            ts = T0 + r * 100 + b
            user = f"{tag}-{(r * per_request + b) % users}"
            bodies.append(batch(user, [custom("e", ts), custom("f", ts)], user_attributes={"last_request": str(r)}))
        response = api.post("/v2/bulkevents", bodies)
        assert response.status_code == 202, response.text
        sent += bodies
    return sent


def workspace_file(tmp_path: Path, sink_url: str, **sections: dict) -> tuple[Path, Path, int]:
    """The demo workspace delivering to `sink_url` (with `sections` replaced), written for `cdp serve --config`;
    with a data dir and a free port for it."""
    config = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    config["outputs"][0]["settings"]["url"] = sink_url
    config.update(sections)
    config_path = tmp_path / "workspace.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path, tmp_path / "data", free_port()


def wait_delivered(api: Api, sink: Receiver, sent: list[dict], timeout: float = 120) -> None:
    """Every batch in `sent` reached the sink, then every outbox drained."""
    want = {b["source_request_id"] for b in sent}
    wait_for(
        lambda: {b["source_request_id"] for b in sink.bodies()} >= want,
        timeout=timeout,
        what="every accepted batch delivered",
    )
    wait_for(api.settled, timeout=60, what="outboxes drained")


def start_serve(config_path: Path, data_dir: Path, port: int, *options: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "cdp_actors.cli",
        "serve",
        "--config",
        str(config_path),
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        *options,
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def up() -> bool:
        assert process.poll() is None, process.stdout.read().decode()
        try:
            # the app at "/" (Profile API, /oauth/token) is deployed last: once it has the route, every app is up
            return requests.get(f"http://127.0.0.1:{port}/oauth/token", timeout=2).status_code == 405
        except requests.RequestException:
            return False

    wait_for(up, timeout=180, interval=0.5, what="cdp serve to come up")
    return process


def kill_9(process: subprocess.Popen) -> None:
    """SIGKILL the runtime: the driver and every process it started (GCS, raylet, workers, actors)."""
    tree = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(30)
    wait_for(
        lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in tree),
        timeout=30,
        what="every runtime process gone",
    )


def check_profiles(api: Api, receiver: Receiver, sent: list[dict]) -> None:
    expected_batches = Counter(b["user_identities"]["customer_id"] for b in sent)
    mpids = {}
    for body in receiver.bodies():
        customer = next(i["identity"] for i in body["user_identities"] if i["identity_type"] == "customer_id")
        mpids[customer] = body["mpid"]
    for customer, n in expected_batches.items():
        profile = api.get(f"/cdp/users/{mpids[customer]}").json()
        assert (profile["batches"], profile["events"]) == (n, 2 * n), customer


def test_kill_9_the_whole_runtime_then_restart_delivers_everything_once(tmp_path: Path) -> None:
    sink = Receiver()  # down until after the crash
    config_path, data_dir, port = workspace_file(tmp_path, sink.url, retry=PATIENT_RETRY)

    process = start_serve(config_path, data_dir, port)
    api = Api(port)
    try:
        sent = send_load(api, users=50, requests_=30, per_request=20, tag="crash")
        assert api.accepted_batches() == len(sent)
        assert not api.settled()  # nothing could be delivered yet: the crash lands mid-processing
        kill_9(process)

        sink.start()
        process = start_serve(config_path, data_dir, port)
        wait_delivered(api, sink, sent, timeout=180)
        assert len(sink.received) == len(sent)  # nothing was delivered before the crash, so exactly once
        check_profiles(api, sink, sent)

        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    finally:
        if process.poll() is None:
            kill_9(process)
        sink.stop()


def test_a_crashed_shard_and_forwarder_restart_without_loss(platform, receiver) -> None:
    api = platform(demo_config(receiver.url, retry=PATIENT_RETRY))
    sent = send_load(api, users=30, requests_=5, per_request=20, tag="shard")
    ray.kill(handles.shard(0), no_restart=False)
    sent += send_load(api, users=30, requests_=5, per_request=20, tag="shard")
    ray.kill(handles.forwarder(0), no_restart=False)
    sent += send_load(api, users=30, requests_=5, per_request=20, tag="shard")
    wait_delivered(api, receiver, sent)
    check_profiles(api, receiver, sent)


def test_kill_9_during_identity_traffic_keeps_index_and_profiles_in_agreement(tmp_path: Path) -> None:
    sink = Receiver().start()
    config_path, data_dir, port = workspace_file(tmp_path, sink.url)
    process = start_serve(config_path, data_dir, port)
    api = Api(port)
    answered: dict[str, str] = {}  # customer -> the MPID an acknowledged identify/login returned
    enough = threading.Event()

    def identify(n: int) -> None:
        body = {"environment": "production", "known_identities": {"customerid": f"idk-{n}", "ios_idfv": f"dev-{n}"}}
        with contextlib.suppress(requests.RequestException):
            response = requests.post(
                f"{api.base}/v1/{'login' if n % 2 else 'identify'}",
                json=body,
                timeout=10,
                headers={"Authorization": DEMO_AUTH},
            )
            if response.status_code == 200:
                answered[f"idk-{n}"] = response.json()["mpid"]
        if len(answered) >= 60:
            enough.set()

    try:
        sent = send_load(api, users=20, requests_=5, per_request=20, tag="idk")  # batches resolve meanwhile
        with ThreadPoolExecutor(16) as pool:
            calls = [pool.submit(identify, n) for n in range(200)]
            assert enough.wait(120), f"only {len(answered)} of 60 identify calls answered before the kill"
            kill_9(process)  # identify calls still in flight are cut off
            for call in calls:
                call.result()
        process = start_serve(config_path, data_dir, port)

        for customer, mpid in answered.items():  # every acknowledged answer survived
            assert idsync_search(api, customer) == mpid, customer
        for n in range(200):  # retried calls (and cut-off ones) still end with one MPID per customer
            identify(n)
            assert len(api.get("/cdp/users/search", identity_type="customer_id", value=f"idk-{n}").json()["users"]) == 1
        wait_delivered(api, sink, sent, timeout=180)
        check_profiles(api, sink, sent)
        for body in sink.bodies():  # the shard profile each batch went to is the one the index resolves
            customer = next(i["identity"] for i in body["user_identities"] if i["identity_type"] == "customer_id")
            assert idsync_search(api, customer) == str(body["mpid"])
    finally:
        if process.poll() is None:
            kill_9(process)
        sink.stop()


def idsync_search(api: Api, customer: str) -> str:
    response = api.post("/v1/search", {"environment": "production", "known_identities": {"customerid": customer}})
    assert response.status_code == 200, response.text
    return response.json()["mpid"]
