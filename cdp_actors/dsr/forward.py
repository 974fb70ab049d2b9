"""Forwarding a data subject request to the outputs that take one: Firehose's `DsrProcessingRequest` and the
partners' own deletion (and retrieval) APIs, each adapter's `prepare_dsr` (`integrations/base.py`).

Every output connected to the request's input whose adapter takes data subject requests gets one status: `sent`
when each of its requests was answered 2xx, `failed` when one was refused or still failed after the workspace's
retry policy (`retry:`; each attempt bounded by `retry.request_timeout_s`), `skipped` when the partner does not
take the request type or the subject has no identity the partner knows users by. Connections count whether
active or paused: data sent before a pause is still at the partner. Status messages name HTTP statuses and our
own reasons, never a credential.
"""

from __future__ import annotations

import asyncio

import aiohttp

from cdp_actors.config import Output, WorkspaceConfig
from cdp_actors.dsr.model import DsrRequest, PartnerStatus
from cdp_actors.forwarding.http import UnsendableRequest, send
from cdp_actors.forwarding.retry import RetryPolicy
from cdp_actors.integrations.base import DsrAdapter, DsrSubject, HttpRequest, takes_dsr
from cdp_actors.integrations.registry import build_adapter
from cdp_actors.profiles.model import SubjectRecord


def dsr_subject(request: DsrRequest, records: list[SubjectRecord]) -> DsrSubject:
    """The request as partners are told of it: the request's identities first, then its profiles' (user and
    device identities), each value once per type; the MPIDs of the profiles and those the request names."""
    identities: dict[str, list[str]] = {}

    def add(kind: str, value: object) -> None:
        if value is not None and str(value) not in identities.setdefault(kind, []):
            identities[kind].append(str(value))

    for identity in request.identities:
        add(identity.identity_type, identity.value)
    for record in records:
        for stamped in (record.profile.user_identities, record.profile.device_identities):
            for kind, item in stamped.items():
                add(kind, item.value)
    mpids = list(dict.fromkeys([*request.mpids, *(record.profile.mpid for record in records)]))
    return DsrSubject(
        subject_request_id=request.subject_request_id,
        subject_request_type=request.subject_request_type,
        regulation=request.regulation,
        submitted_time=request.submitted_time,
        api_version=request.api_version,
        mpids=mpids,
        identities={kind: values for kind, values in identities.items() if values},
    )


def dsr_outputs(request: DsrRequest, config: WorkspaceConfig) -> list[tuple[Output, DsrAdapter]]:
    """The outputs connected to the request's input that take data subject requests, by output id."""
    connected = {c.output for c in config.connections if c.input == request.input_id}
    found = []
    for output in sorted(config.outputs, key=lambda o: o.id):
        if output.id in connected:
            adapter = build_adapter(output.kind, output.settings)
            if takes_dsr(adapter):
                found.append((output, adapter))
    return found


async def deliver(
    session: aiohttp.ClientSession, requests: list[HttpRequest], policy: RetryPolicy, timeout: aiohttp.ClientTimeout
) -> str | None:
    """Send the requests in order, each retried as the policy says; None when all were delivered, else why not."""
    for request in requests:
        attempt_no = 0
        while True:
            attempt_no += 1
            try:
                attempt = await send(session, request, timeout)
            except UnsendableRequest as error:
                return f"not sendable: {error}"
            if attempt.ok:
                break
            verdict = policy.judge(attempt_no, attempt)
            if not verdict.retry:
                tries = "attempt" if attempt_no == 1 else "attempts"
                return f"{attempt.alert_type} after {attempt_no} {tries}"
            await asyncio.sleep(verdict.delay_s)
    return None


async def partner_status(
    output: Output, adapter: DsrAdapter, subject: DsrSubject, config: WorkspaceConfig, now_ms: int
) -> PartnerStatus:
    def status(state: str, message: str = "") -> PartnerStatus:
        return PartnerStatus(domain=adapter.dsr_domain, name=output.name, status=state, status_message=message)

    try:
        prepared = adapter.prepare_dsr(subject, now_ms)
    except ValueError as error:  # a field the partner's request cannot carry (e.g. an unreadable submitted_time)
        return status("failed", f"request not built: {error}")
    if prepared is None:
        return status("skipped", f"{output.kind} takes no {subject.subject_request_type} requests")
    if not prepared.requests:
        return status("skipped", "; ".join(r.message for r in prepared.rejections) or "nothing to send")
    retry = config.retry
    policy = RetryPolicy(retry.max_attempts, retry.base_delay_s, retry.max_delay_s)
    timeout = aiohttp.ClientTimeout(total=retry.request_timeout_s)
    async with aiohttp.ClientSession() as session:
        failure = await deliver(session, prepared.requests, policy, timeout)
    return status("failed", failure) if failure else status("sent")


async def forward_to_outputs(
    request: DsrRequest, records: list[SubjectRecord], config: WorkspaceConfig, now_ms: int
) -> list[PartnerStatus]:
    """One status per output that takes data subject requests; the outputs are sent to concurrently."""
    subject = dsr_subject(request, records)
    outputs = dsr_outputs(request, config)
    return list(await asyncio.gather(*(partner_status(o, a, subject, config, now_ms) for o, a in outputs)))
