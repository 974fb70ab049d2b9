"""Delivery when a row, a partner or an HTTP error misbehaves, against real local partners, without Ray: a row
that raises fails alone (its lane goes on), `Retry-After` is capped, redirects are not followed, and no alert or
log line names a credential."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from cdp_actors.config import WorkspaceConfig
from cdp_actors.forwarding.delivery import INTERNAL_ERROR, Delivery
from cdp_actors.forwarding.retry import FATAL
from cdp_actors.integrations import webhook
from cdp_actors.integrations.base import HttpRequest, MembershipChange, Prepared
from cdp_actors.schema.records import Alert, OutboxRow
from cdp_actors.tasks import Tasks
from tests.conftest import demo_config
from tests.support import Receiver

GIANT_VERSION = "1." + "9" * 4_301  # past Python's 4,300-digit limit for int("...")
FAST_RETRY = {"max_attempts": 5, "base_delay_s": 0.05, "max_delay_s": 0.3, "request_timeout_s": 2}


class PoisonableWebhook(webhook.Adapter):
    """The webhook, raising on a batch marked `poison` (as a bug or unforeseen data would) and, when told, on
    combining requests; a batch marked `bad_header` gets a header value the HTTP client refuses to send."""

    combine_raises = False

    def prepare_raw(self, payload: bytes, event_count: int) -> Prepared:
        batch = msgspec.json.decode(payload)
        self._check(batch)
        if batch.get("bad_header"):
            headers = {**self.headers, "X-Signature": "SECRET-SIG-1\r\nX-Injected: 1"}
            return Prepared([HttpRequest(self.url, payload, headers)], forwarded_events=event_count)
        return super().prepare_raw(payload, event_count)

    def prepare(self, batch: dict[str, Any], now_ms: int) -> Prepared:
        self._check(batch)
        return super().prepare(batch, now_ms)

    def combine(self, requests: list[HttpRequest]) -> HttpRequest:
        if self.combine_raises:
            raise RuntimeError("combining failed")
        return super().combine(requests)

    @staticmethod
    def _check(batch: dict[str, Any]) -> None:
        if batch.get("poison"):
            raise ValueError("poisoned batch at https://partner.example/x?api_key=SECRET-KEY-1")


def row(key: int, mpid: int, **payload: Any) -> OutboxRow:
    return OutboxRow(
        key=key.to_bytes(8, "big"),
        shard=0,
        connection_id=1,
        input_id=1,
        output_id=1,
        environment="production",
        mpid=mpid,
        event_count=1,
        payload=msgspec.json.encode({"mpid": mpid, "n": key, **payload}),
        received_ms=int(time.time() * 1000),
    )


def config(
    url: str, batches_per_request: int = 1, retry: dict[str, Any] = FAST_RETRY, **connection: Any
) -> WorkspaceConfig:
    base = demo_config(url, retry=retry)
    output = base.outputs[0]
    settings = output.settings.model_copy(update={"max_batches_per_request": batches_per_request})
    return base.model_copy(
        update={
            "outputs": [output.model_copy(update={"settings": settings})],
            "connections": [base.connections[0].model_copy(update=connection)],
        }
    )


async def deliver(delivery: Delivery, rows: list[OutboxRow], timeout_s: float = 10.0) -> Delivery:
    """Queue `rows` in one loop turn and wait until every lane is empty; `timeout_s` bounds the wait."""
    delivery.queue(rows)
    deadline = time.monotonic() + timeout_s
    while delivery.lanes:
        assert time.monotonic() < deadline, f"rows still out after {timeout_s} s: {delivery.status(0)}"
        await asyncio.sleep(0.01)
    await delivery.close()
    return delivery


def run(
    workspace: WorkspaceConfig,
    rows: list[OutboxRow],
    poisonable: bool = True,
    combine_raises: bool = False,
    timeout_s: float = 10.0,
) -> Delivery:
    async def main() -> Delivery:
        delivery = Delivery(workspace)
        if poisonable:
            adapter = PoisonableWebhook(workspace.outputs[0].settings)
            adapter.combine_raises = combine_raises
            delivery.adapters[1] = adapter
        return await deliver(delivery, rows, timeout_s)

    return asyncio.run(main())


def batches(partner: Receiver) -> list[dict[str, Any]]:
    """The batches the partner received, a combined request's one by one."""
    return [batch for body in partner.bodies() for batch in (body if isinstance(body, list) else [body])]


def acked(delivery: Delivery) -> list[bytes]:
    return sorted(delivery.acks[0])


def fatal(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(alert.type, alert.message) for alert in alerts if alert.severity == FATAL]


def test_a_poisoned_row_in_a_group_fails_alone_and_its_lane_goes_on(partner: Receiver, caplog) -> None:
    rows = [row(1, mpid=10), row(2, mpid=20, poison=True), row(3, mpid=30), row(4, mpid=20)]
    with caplog.at_level(logging.INFO):
        delivery = run(config(partner.url, batches_per_request=10), rows)
    assert sorted((body["mpid"], body["n"]) for body in batches(partner)) == [(10, 1), (20, 4), (30, 3)]
    assert acked(delivery) == sorted(r.key for r in rows)
    assert (delivery.delivered, delivery.dropped, delivery.failed) == (3, 1, 1)
    ((alert_type, message),) = fatal(delivery.alerts)
    assert alert_type == INTERNAL_ERROR and "(mpid 20)" in message
    assert "preparing the batch for webhook failed: ValueError: poisoned batch" in message
    assert "SECRET-KEY-1" not in message and "api_key=***" in message
    assert "SECRET-KEY-1" not in caplog.text and "poisoned batch" in caplog.text


def test_a_row_that_raises_on_its_own_fails_alone(partner: Receiver) -> None:
    rows = [row(1, mpid=20, poison=True), row(2, mpid=20)]
    delivery = run(config(partner.url, environments=["production"], min_app_version="1.0"), rows)  # decoded path
    assert [body["n"] for body in batches(partner)] == [2]
    assert acked(delivery) == [rows[0].key, rows[1].key]
    assert [alert_type for alert_type, _ in fatal(delivery.alerts)] == [INTERNAL_ERROR]


def test_a_request_the_http_client_refuses_fails_its_row_alone(partner: Receiver, caplog) -> None:
    rows = [row(1, mpid=20, bad_header=True), row(2, mpid=20)]
    with caplog.at_level(logging.INFO):
        delivery = run(config(partner.url), rows)
    assert [body["n"] for body in batches(partner)] == [2]
    ((alert_type, message),) = fatal(delivery.alerts)
    assert alert_type == INTERNAL_ERROR and "sending the batch failed: UnsendableRequest: ValueError" in message
    assert "SECRET-SIG-1" not in message + caplog.text


def test_a_failing_combine_sends_each_row_alone(partner: Receiver) -> None:
    rows = [row(1, mpid=10), row(2, mpid=20)]
    delivery = run(config(partner.url, batches_per_request=10), rows, combine_raises=True)
    assert sorted(body["n"] for body in batches(partner)) == [1, 2]  # each its own batch, not an array
    assert delivery.delivered == 2 and fatal(delivery.alerts) == []


def test_a_giant_application_version_is_screened_and_the_lane_goes_on(partner: Receiver) -> None:
    newer, older = row(1, mpid=20, application_info={"application_version": GIANT_VERSION}), row(3, mpid=20)
    below = row(2, mpid=20, application_info={"application_version": "0." + "9" * 4_301})
    workspace = config(partner.url, min_app_version="1.2")
    delivery = run(workspace, [newer, below, older], poisonable=False)
    assert [body["n"] for body in batches(partner)] == [1, 3]  # the one below 1.2 screened out
    assert fatal(delivery.alerts) == [] and delivery.screened_out == 1
    assert acked(delivery) == sorted(r.key for r in (newer, below, older))


def test_retry_after_forever_waits_only_max_delay_s(partner: Receiver) -> None:
    partner.script, partner.retry_after = [429, 503], "inf"
    started = time.monotonic()
    delivery = run(config(partner.url, retry={**FAST_RETRY, "max_delay_s": 0.2}), [row(1, mpid=10)], timeout_s=5)
    assert delivery.delivered == 1 and partner.attempts == 3
    assert time.monotonic() - started < 5
    waits = [b - a for a, b in zip(partner.attempt_times, partner.attempt_times[1:], strict=False)]
    assert all(0.15 <= wait < 1.0 for wait in waits), waits  # max_delay_s, not the backoff's 0.05 s


def test_a_redirect_is_not_followed_and_is_a_fatal_delivery_error(partner: Receiver) -> None:
    target = Receiver().start()
    try:
        partner.always, partner.redirect_to = 302, f"{target.url}?from=redirect"
        delivery = run(config(partner.url), [row(1, mpid=10), row(2, mpid=10)], poisonable=False)
        assert target.attempts == 0 and partner.attempts == 2  # each tried once: not retried
        assert (delivery.delivered, delivery.dropped) == (0, 2)
        assert [(alert.type, alert.severity) for alert in delivery.alerts] == [("302-Found", FATAL)] * 2
        assert "HTTP 302 (redirects are not followed)" in delivery.alerts[0].message
    finally:
        target.stop()


def test_a_connection_error_alert_names_no_credential(caplog) -> None:
    workspace = config(
        "http://user:PASSWORD-1@127.0.0.1:99999/hook?token=SECRET-TOKEN-123", retry={**FAST_RETRY, "max_attempts": 2}
    )
    with caplog.at_level(logging.INFO):
        delivery = run(workspace, [row(1, mpid=10)], poisonable=False)
    assert delivery.dropped == 1 and len(delivery.alerts) == 2
    messages = " ".join(alert.message for alert in delivery.alerts)
    assert "InvalidUrlClientError" in messages and "127.0.0.1:99999/hook?token=***" in messages
    assert "SECRET-TOKEN-123" not in messages + caplog.text and "PASSWORD-1" not in messages + caplog.text


class FailingAudience:
    """An audience adapter that raises for audience 8 and prepares the others as `inner` does."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.status_alerts, self.max_batch, self.max_age_s = (
            inner,
            inner.status_alerts,
            inner.max_batch,
            inner.max_age_s,
        )

    def prepare_memberships(self, changes: list[MembershipChange], now_ms: int) -> Prepared:
        if any(change.audience_id == 8 for change in changes):
            raise KeyError("audience 8 at https://graph.example/x?access_token=SECRET-TOKEN-8")
        return self.inner.prepare_memberships(changes, now_ms)


def test_an_audience_upload_that_raises_drops_its_group_and_the_uploads_go_on(partner: Receiver) -> None:
    base = demo_config(partner.url, retry=FAST_RETRY)
    settings = {
        "access_token": "fb-token",
        "audience_ids": {"7": "fb-7", "8": "fb-8"},
        "api_url": partner.base,
        "bulk_max_age_s": 0.05,
    }
    audience = base.outputs[0].model_validate(
        {"id": 2, "name": "fb", "kind": "facebook_audience", "settings": settings}
    )
    workspace = WorkspaceConfig.model_validate(
        {
            **base.model_dump(mode="python"),
            "outputs": [*base.model_dump(mode="python")["outputs"], audience.model_dump(mode="python")],
        }
    )

    def change(audience_id: int, mpid: int) -> MembershipChange:
        return MembershipChange(audience_id, f"a{audience_id}", mpid, "add", {"email": f"{mpid}@x.io"}, 1)

    async def main() -> Delivery:
        delivery = Delivery(workspace)
        delivery.audience_adapters[2] = FailingAudience(delivery.audience_adapters[2])
        flushing = asyncio.get_running_loop().create_task(delivery.flush_bulk_forever())
        delivery.queue_memberships(2, [change(8, 1), change(7, 2)])
        deadline = time.monotonic() + 5
        while not (partner.received and delivery.forwarded_memberships[2]):
            assert time.monotonic() < deadline and not flushing.done(), "audience 7 was not uploaded"
            await asyncio.sleep(0.01)
        delivery.queue_memberships(2, [change(7, 3)])  # the flush loop is still alive
        while len(partner.received) < 2:
            assert time.monotonic() < deadline and not flushing.done(), "the second upload did not come"
            await asyncio.sleep(0.01)
        flushing.cancel()
        await delivery.close()
        return delivery

    delivery = asyncio.run(main())
    ((alert_type, message),) = fatal(delivery.alerts)
    assert alert_type == INTERNAL_ERROR and "uploading 1 audience changes failed: KeyError" in message
    assert "SECRET-TOKEN-8" not in message and "(mpid 8)" in message  # an audience alert names the audience


def test_a_background_task_is_held_until_done_and_its_failure_logged_redacted(caplog) -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("lost https://h/x?token=SECRET-TOKEN-7")

    async def main() -> Tasks:
        tasks = Tasks("owner")
        task = tasks.spawn(fails())
        assert task in tasks.running
        with contextlib.suppress(RuntimeError):
            await task
        await asyncio.sleep(0)  # the done callback runs
        return tasks

    with caplog.at_level(logging.INFO):
        tasks = asyncio.run(main())
    assert len(tasks) == 0 and tasks.failed == 1
    assert "owner task failed: RuntimeError: lost https://h/x?token=***" in caplog.text
    assert "SECRET-TOKEN-7" not in caplog.text
