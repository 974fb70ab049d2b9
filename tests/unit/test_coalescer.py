"""The coalescer combines what waits while its requests are out, and answers every caller."""

from __future__ import annotations

import asyncio

from cdp_actors.forwarding.coalesce import Coalescer
from cdp_actors.forwarding.retry import Attempt
from cdp_actors.integrations.base import HttpRequest
from cdp_actors.integrations.webhook import Adapter, Settings


def request(n: int) -> HttpRequest:
    return HttpRequest("http://partner/", f'{{"n":{n}}}'.encode())


class Partner:
    """Records the combined bodies and holds each answer until released."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.status = status

    async def send(self, combined: HttpRequest) -> Attempt:
        self.bodies.append(combined.body)
        await self.release.wait()
        return Attempt(status=self.status)


def webhook(max_batches: int) -> Adapter:
    return Adapter(Settings(url="http://partner/", max_batches_per_request=max_batches))


async def run(partner: Partner, max_items: int, n: int) -> list[Attempt]:
    coalescer = Coalescer(webhook(max_items).combine, max_items, partner.send, in_flight=1)
    sends = [asyncio.create_task(coalescer.send(request(i))) for i in range(n)]
    while len(partner.bodies) < 1:
        await asyncio.sleep(0)
    partner.release.set()
    return await asyncio.gather(*sends)


def test_what_waits_while_a_request_is_out_goes_together_up_to_the_maximum() -> None:
    partner = Partner()
    answers = asyncio.run(run(partner, max_items=4, n=10))
    assert partner.bodies == [
        b'[{"n":0}]',  # the first goes at once
        b'[{"n":1},{"n":2},{"n":3},{"n":4}]',
        b'[{"n":5},{"n":6},{"n":7},{"n":8}]',
        b'[{"n":9}]',
    ]
    assert answers == [Attempt(status=200)] * 10


def test_every_caller_gets_the_combined_request_outcome() -> None:
    partner = Partner(status=503)
    answers = asyncio.run(run(partner, max_items=100, n=3))
    assert [a.status for a in answers] == [503, 503, 503]
    assert len(partner.bodies) == 2


def test_webhook_combines_bodies_into_a_json_array_and_defaults_to_one_batch_per_post() -> None:
    assert Settings(url="http://partner/").max_batches_per_request == 1
    combined = webhook(10).combine([request(1), request(2)])
    assert combined.body == b'[{"n":1},{"n":2}]' and combined.headers["Content-Type"] == "application/json"
