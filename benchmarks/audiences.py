"""`cdp bench audiences`: what calculated attributes and real-time audiences cost, in one run.

Phases:
1. The same-run baseline (no Ray), as every scenario.
2. `plain`: `cdp bench ingest`'s closed-loop load on a fresh platform with the workspace as given.
3. `derived`: the same load on a fresh platform whose workspace adds 20 active calculated attributes (every
   calculation type, half with `within` windows, over the load's events) and 20 real-time audiences (criteria
   mixing user attributes, CA values, event counts, identities, consent and other audiences), all connected to a
   webhook output at a membership sink. `ratio_e2e_derived_to_plain` is the issue's figure (target ≥ 0.8).
4. `latency`: open loop at half of phase 3's maximum (its end-to-end rate: beyond it, batches wait in the intake)
   on a fresh derived platform; meanwhile, `PROBES_PER_S` times a second, a batch for a new user that enters the
   probe audience. Membership latency is from the batch's `202` to
   the membership sink receiving that user's `add` (target p99 ≤ 2 s).
5. `backfill`: a fresh plain platform gets one batch for each of `--backfill-users` users (the issue: 1,000,000),
   then a calculated attribute is created and activated through the Platform API v2; the rate is users visited
   per second until every shard's backfill is finished (`/cdp/status` `calculated_attributes`), with the peak RSS
   of the shard processes meanwhile.

The CAs and audiences are written into the workspace's `calculated_attributes` / `audiences` sections with
`active_definition` set, so phases 3 and 4 run the shards' derived state without any Platform API call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil
from aiohttp import web

from benchmarks.ingest import e2e_rate, statuses, write
from benchmarks.load import LoadResult, admin_bearer, get_json, say
from benchmarks.platform import Platform, baseline_phase, running_platform, system_phase, workload_for
from benchmarks.servers import percentiles, start_process
from benchmarks.workload import Workload
from cdp_actors.cli import free_port
from cdp_actors.config import Audience, CalculatedAttribute, Output, WorkspaceConfig

MEMBERSHIP_OUTPUT_ID = 900
"""The webhook output every benchmark audience is connected to (an id the demo workspace does not use)."""
FIRST_CA_ID = 900
FIRST_AUDIENCE_ID = 900
PROBE_AUDIENCE_ID = 999
PROBE_ATTRIBUTE = "bench_probe"
PROBE_PREFIX = "probe-"
"""The probe users' customer ids: the membership sink records the first `add` of each."""
PROBES_PER_S = 5.0
"""Probe batches per second in the latency phase: ~5 × duration samples, a negligible share of the load."""
MEMBERSHIP_WAIT_S = 30.0
"""How long after the latency phase's drain the membership sink may still receive probe adds."""
BACKFILL_USERS = 20_000
"""`--backfill-users` default: a quick run; the issue's figure is 1,000,000 (README: the command)."""
BACKFILL_TIMEOUT_S = 3600.0
SHARD_PROCESS = "ProfileShard"
"""Ray titles an actor's process `ray::<class>`: how the shard processes are found for their RSS."""


# ---- the workspace -------------------------------------------------------------------------------------------


def _custom(name: str, attribute: str | None = None) -> dict[str, Any]:
    point = {"type": "event_attribute" if attribute else "event", "event_type": "custom_event", "event_name": name,
             "custom_event_type": "navigation"}  # fmt: skip
    return {**point, "attribute_name": attribute} if attribute else point


def _purchase(product_attribute: str | None = None) -> dict[str, Any]:
    point = {"type": "event", "event_type": "commerce_event", "custom_event_type": "purchase"}
    if product_attribute is None:
        return point
    return {**point, "type": "event_attribute", "attribute_category": "product_attribute",
            "attribute_name": product_attribute}  # fmt: skip


def _screen(name: str) -> dict[str, Any]:
    return {"type": "event", "event_type": "screen_view", "event_name": name}


def _within(amount: int, unit: str = "days") -> dict[str, Any]:
    return {"type": "within", "within": amount, "within_unit": unit}


_MORE_THAN_500 = {"type": "number", "operator": "greater_than", "attribute_name": "n", "value": "500"}
_PAGE_1 = {"type": "string", "operator": "contains", "attribute_name": "page", "value": "/p/1"}
CA_DEFINITIONS: list[tuple[str, dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]] = [
    # (calculation type, data point, time period, conditions), over `benchmarks/workload.py`'s events
    ("count", _custom("action-1"), None, []),
    ("count", _screen("screen-3"), _within(7), []),
    ("sum", _purchase("price"), _within(30), []),
    ("sum", _custom("action-2", "n"), None, []),
    ("min", _custom("action-3", "n"), _within(1), []),
    ("max", _custom("action-4", "n"), None, []),
    ("average", _purchase("price"), _within(14), []),
    ("first_occurrence", _custom("action-5", "page"), None, []),
    ("last_occurrence", _custom("action-6", "page"), _within(7), []),
    ("first_occurrence_timestamp", _screen("screen-4"), None, []),
    ("last_occurrence_timestamp", _purchase(), _within(30), []),
    ("unique_list", _custom("action-7", "page"), None, []),
    ("unique_values_count", _custom("action-8", "page"), _within(1, "weeks"), []),
    ("most_frequent", _custom("action-9", "page"), None, []),
    ("count", _custom("action-10"), _within(3), [_MORE_THAN_500]),
    ("sum", _custom("action-11", "n"), None, [_PAGE_1]),
    ("most_frequent", _purchase("id"), _within(2, "weeks"), []),
    ("unique_list", _custom("action-12", "ref"), None, []),
    ("last_occurrence", _custom("action-13", "n"), _within(7), []),
    ("count", _purchase(), None, []),
]


def ca_name(n: int) -> str:
    return f"bench_ca_{n}"


def calculated_attributes() -> list[CalculatedAttribute]:
    """Twenty active CAs: every calculation type, ten with a `within` window."""
    made = []
    for n, (calculation, point, period, conditions) in enumerate(CA_DEFINITIONS, start=1):
        definition = {"calculation_type": calculation, "data_point": point, "conditions": conditions,
                      **({"time_period": period} if period else {})}  # fmt: skip
        made.append(
            CalculatedAttribute.model_validate(
                {"id": FIRST_CA_ID + n, "name": ca_name(n), "active_definition": definition, "generation": 1}
            )
        )
    return made


def _ca(n: int, type_: str, operator: str, **values: Any) -> dict[str, Any]:
    return {"calculated_attribute": ca_name(n), "type": type_, "operator": operator, **values}


def _performed(data: dict[str, Any], operator: str, value: int, days: int) -> dict[str, Any]:
    return {"event": data, "count": {"operator": operator, "value": value}, "within_days": days}


def _member(n: int) -> dict[str, Any]:
    return {"audience": FIRST_AUDIENCE_ID + n}


_PRO = {"user_attribute": "plan", "type": "string", "operator": "equals", "value": "pro"}
_ACTION_1 = {"event_type": "custom_event", "event_name": "action-1"}
AUDIENCE_CRITERIA: list[dict[str, Any]] = [
    _PRO,
    _ca(1, "number", "greater_than", value="2"),
    {"all": [{"user_attribute": "plan", "type": "string", "operator": "in_list", "values": ["pro", "team"]},
             _performed(_ACTION_1, "at_least", 1, 7)]},
    {"any": [_ca(3, "number", "greater_than", value="20"), {"identity": "mobile_number"}]},
    {"not": {"gdpr_consented": "analytics"}},
    _performed({"event_type": "screen_view", "event_name": "screen-3"}, "at_least", 2, 1),
    {"all": [_member(1), _ca(7, "number", "greater_or_equal", value="9")]},
    _ca(12, "string", "contains", value="/p/1"),
    _performed({"event_type": "commerce_event", "custom_event_type": "purchase"}, "at_most", 0, 7),
    {"all": [{"user_attribute": "visits", "type": "number", "operator": "greater_than", "value": "500"},
             _ca(2, "number", "exists")]},
    _ca(14, "string", "exists"),
    {"any": [_member(2), _member(6)]},
    _performed({"event_type": "custom_event", "event_name": "action-5", "conditions": [_PAGE_1]}, "at_least", 1, 30),
    _ca(13, "number", "between", min_value="2", max_value="5"),
    {"all": [{"identity": "email"}, {"not": {**_PRO, "value": "free"}}]},
    _ca(11, "date", "after", value="2020-01-01T00:00:00"),
    _performed({"event_type": "custom_event", "event_name": "action-20"}, "equals", 1, 3),
    {"all": [_member(15), _performed({"event_type": "screen_view", "event_name": "screen-7"}, "at_least", 1, 7)]},
    {"user_attribute": "visits", "type": "number", "operator": "less_than", "value": "100"},
    {"any": [{"ccpa_data_sale_opt_out": True}, _ca(5, "number", "less_than", value="100")]},
]  # fmt: skip
PROBE_CRITERIA = {"user_attribute": PROBE_ATTRIBUTE, "type": "string", "operator": "equals", "value": "yes"}


def real_time_audiences(probe: bool = False) -> list[Audience]:
    """Twenty real-time audiences connected to the membership output (and, with `probe`, the probe audience)."""
    criteria = list(enumerate(AUDIENCE_CRITERIA, start=1))
    made = [
        Audience.model_validate(
            {
                "id": FIRST_AUDIENCE_ID + n,
                "name": f"bench audience {n}",
                "criteria": node,
                "connected_outputs": [MEMBERSHIP_OUTPUT_ID],
            }
        )  # fmt: skip
        for n, node in criteria
    ]
    if probe:
        made.append(
            Audience.model_validate(
                {
                    "id": PROBE_AUDIENCE_ID,
                    "name": "bench probe",
                    "criteria": PROBE_CRITERIA,
                    "connected_outputs": [MEMBERSHIP_OUTPUT_ID],
                }
            )  # fmt: skip
        )
    return made


def derived_workspace(config: WorkspaceConfig, membership_url: str, probe: bool = False) -> WorkspaceConfig:
    """`config` with the benchmark's CAs and audiences, and a webhook output at `membership_url` for their
    membership changes; validated as a workspace file is (references, cycles, output kinds)."""
    template = next(o for o in config.outputs if o.kind == "webhook")
    members = Output.model_validate(
        {
            "id": MEMBERSHIP_OUTPUT_ID,
            "name": "bench memberships",
            "kind": "webhook",
            "settings": template.settings.model_copy(update={"url": membership_url}),
        }  # fmt: skip
    )
    # the fields as they are (models, secrets unmasked), so only the workspace's own checks run again
    fields = {name: getattr(config, name) for name in type(config).model_fields}
    return WorkspaceConfig.model_validate(
        {
            **fields,
            "outputs": [*config.outputs, members],
            "calculated_attributes": calculated_attributes(),
            "audiences": real_time_audiences(probe),
        }
    )


# ---- the membership sink -------------------------------------------------------------------------------------


def probe_adds(body: Any) -> Iterator[str]:
    """The probe users (their `probe-` identities) an `AudienceMembershipChangeRequest` adds to the probe audience;
    read liberally (one request or a JSON array of them, identities wherever the profile carries them)."""
    for request in body if isinstance(body, list) else [body]:
        for profile in (request or {}).get("user_profiles") or []:
            audiences = profile.get("audiences") or []
            if any(str(a.get("audience_id")) == str(PROBE_AUDIENCE_ID) and a.get("action") == "add" for a in audiences):
                yield from {text for text in _strings(profile) if text.startswith(PROBE_PREFIX)}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def run_membership_sink(port: int) -> None:
    """Answers 200 to every POST (membership changes); GET /stats: requests, adds and drops by audience, and
    when each probe user's first `add` arrived (epoch seconds)."""
    counts: dict[str, int] = {"requests": 0, "adds": 0, "drops": 0}
    probes: dict[str, float] = {}
    decode = msgspec.json.Decoder().decode

    async def receive(request: web.Request) -> web.Response:
        now = time.time()
        body = decode(await request.read())
        counts["requests"] += 1
        for message in body if isinstance(body, list) else [body]:
            for profile in (message or {}).get("user_profiles") or []:
                for audience in profile.get("audiences") or []:
                    counts["adds" if audience.get("action") == "add" else "drops"] += 1
        for user in probe_adds(body):
            probes.setdefault(user, now)
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({**counts, "probes": probes})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", receive)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@contextlib.asynccontextmanager
async def membership_sink() -> AsyncIterator[tuple[str, str]]:
    """A membership sink process: (the URL the output posts to, its stats URL)."""
    from benchmarks.load import wait_http

    port = free_port()
    process = start_process(run_membership_sink, port)
    try:
        await wait_http(f"http://127.0.0.1:{port}/stats")
        yield f"http://127.0.0.1:{port}/members", f"http://127.0.0.1:{port}/stats"
    finally:
        process.kill()
        process.join()


# ---- figures -------------------------------------------------------------------------------------------------


def membership_latencies_ms(acked: dict[str, float], received: dict[str, float]) -> tuple[list[float], int]:
    """From each probe's `202` to its `add` at the partner, in ms; and how many probes never arrived."""
    latencies = [(received[user] - at) * 1000 for user, at in acked.items() if user in received]
    return latencies, len(acked) - len(latencies)


def shard_rss_mb() -> float:
    """Resident memory of the shard processes (Ray actors titled `ray::ProfileShard`) this process started."""
    total = 0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if SHARD_PROCESS in " ".join(process.cmdline()):
                total += process.memory_info().rss
    return total / 2**20


def phase_figures(phase: dict[str, Any]) -> dict[str, Any]:
    load: LoadResult = phase["load"]
    e2e, _ = e2e_rate(phase["sink"], phase["started"])
    return {
        "acked_events_per_s": round(load.events_per_s),
        "e2e_events_per_s": round(e2e),
        "lost_batches": max(0, load.acked_batches - phase["sink"]["unique_batches"]),
        "statuses": statuses(load),
    }


# ---- phases --------------------------------------------------------------------------------------------------


def derived_outputs(membership_url: str, probe: bool = False) -> Any:
    """A `system_phase` outputs hook: the first output at the event sink, the CAs and audiences added."""

    def configure(config: WorkspaceConfig, sink: str) -> tuple[WorkspaceConfig, list[str]]:
        config = config.with_output_url(config.outputs[0].id, f"{sink}/webhook")
        return derived_workspace(config, membership_url, probe), ["/webhook"]

    return configure


async def send_probes(platform: Platform, acked: dict[str, float], stop: asyncio.Event) -> None:
    """`PROBES_PER_S` single-batch requests a second, each for a new user that enters the probe audience."""
    headers = {"Authorization": platform.auth, "Content-Type": "application/json"}
    encode = msgspec.json.Encoder().encode
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for n in itertools.count():
            if stop.is_set():
                return
            user = f"{PROBE_PREFIX}{n}"
            sent_ms = int(time.time() * 1000)
            batch = {"environment": "production", "source_request_id": f"{sent_ms}-{user}",
                     "user_identities": {"customer_id": user}, "user_attributes": {PROBE_ATTRIBUTE: "yes"},
                     "events": [{"event_type": "screen_view", "data": {"screen_name": "probe",
                                                                       "timestamp_unixtime_ms": sent_ms}}]}  # fmt: skip
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.post(platform.url, data=encode([batch]), headers=headers) as reply:
                    if reply.status == 202:
                        acked[user] = time.time()
            await asyncio.sleep(1 / PROBES_PER_S)


async def latency_phase(config: WorkspaceConfig, args: Any, rate: float) -> dict[str, Any]:
    async with membership_sink() as (members, members_stats):
        outputs = derived_outputs(members, probe=True)
        async with running_platform(config, args, outputs) as platform:
            acked: dict[str, float] = {}
            stop = asyncio.Event()
            probes = asyncio.create_task(send_probes(platform, acked, stop))
            load = await platform.load("latency", workload_for(args), args.duration, rate)
            stop.set()
            await probes
            await platform.drain(load.acked_events, deadline_s=max(120.0, 4 * args.duration))
            deadline = time.monotonic() + MEMBERSHIP_WAIT_S
            while True:
                stats = await get_json(members_stats)
                if len(stats["probes"]) >= len(acked) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
    latencies, missing = membership_latencies_ms(acked, stats["probes"])
    return {
        "rate_target_events_per_s": round(rate),
        "acked_events_per_s": round(load.events_per_s),
        "ack_latency_ms": percentiles(load.ack_latencies_ms),
        "membership_latency_ms": percentiles(latencies),
        "membership_latency_p99_target_ms": 2000,
        "probes_acked": len(acked),
        "probes_missing": missing,
        "membership_adds": stats["adds"],
        "membership_drops": stats["drops"],
        "membership_requests": stats["requests"],
        "statuses": statuses(load),
    }


class HistoryWorkload(Workload):
    """Each user in turn, so `users` batches give every user a stored history."""

    def __init__(self, users: int) -> None:
        super().__init__(users)
        self.next_user = itertools.count()

    def user(self) -> int:
        return next(self.next_user) % self.users


async def send_history(platform: Platform, users: int, concurrency: int) -> int:
    """One batch per user, closed loop with `concurrency` clients honouring 429; the batches acknowledged."""
    workload = HistoryWorkload(users)
    requests = -(-users // workload.batches_per_request)
    pending = iter(range(requests))
    headers = {"Authorization": platform.auth, "Content-Type": "application/json"}
    acked = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal acked
        for n in pending:
            body, _, batches = workload.request()
            while True:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.post(platform.url, data=body, headers=headers) as reply:
                        if reply.status == 202:
                            acked += batches
                            break
                await asyncio.sleep(1)  # 429 or no answer: the same request again, as the SDKs do
            if n % 100 == 0:
                say(f"[history] {acked:,} of {requests * workload.batches_per_request:,} batches acknowledged")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return acked


BACKFILL_CA = {
    "name": "bench backfill",
    "description": "navigation events of the last 30 days",
    "draft_definition": {
        "calculation_type": "count",
        "data_point": _custom("action-1"),
        "time_period": _within(30),
    },  # fmt: skip
}


async def backfill_phase(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    users = args.backfill_users
    async with running_platform(config, args) as platform:
        base = platform.url.removesuffix("/v2/bulkevents")
        acked = await send_history(platform, users, args.concurrency)
        while (await platform.status())["intake"]["lag"] > 0:
            say(f"[history] {await platform.probe()}")
            await asyncio.sleep(1)
        headers = await admin_bearer(base, config)
        v2 = f"{base}/platform/v2/workspaces/{config.workspace.workspace_id}/calculatedattributes"
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(v2, json=BACKFILL_CA) as reply:
                ca_id = int(await reply.text()) if reply.status < 300 else None
                if ca_id is None:
                    raise RuntimeError(f"creating the CA: {reply.status} {await reply.text()}")
            started = time.monotonic()
            async with session.post(f"{v2}/{ca_id}/activation") as reply:
                if reply.status >= 300:
                    raise RuntimeError(f"activating the CA: {reply.status} {await reply.text()}")
        peak_rss, progress = shard_rss_mb(), {}
        while time.monotonic() - started < BACKFILL_TIMEOUT_S:
            progress = (await platform.status()).get("calculated_attributes", {}).get(str(ca_id)) or {}
            peak_rss = max(peak_rss, shard_rss_mb())
            if progress.get("finished"):
                break
            done, total, eta = progress.get("done", 0), progress.get("total", "?"), progress.get("eta_s")
            say(f"[backfill] {done:,} of {total} users, ETA {eta} s")
            await asyncio.sleep(1)
        seconds = time.monotonic() - started
    visited = progress.get("total", 0)
    return {
        "users": users,
        "history_batches_acked": acked,
        "users_backfilled": visited,
        "finished": bool(progress.get("finished")),
        "seconds": round(seconds, 1),
        "users_per_s": round(visited / seconds) if seconds else None,
        "peak_shard_rss_mb": round(peak_rss),
    }


async def run_audiences_bench(config: WorkspaceConfig, args: Any) -> dict[str, Any]:
    args.backfill_users = getattr(args, "backfill_users", None) or BACKFILL_USERS
    baseline = await baseline_phase(config, args)
    plain = await system_phase(config, args, "plain")
    async with membership_sink() as (members, members_stats):
        derived = await system_phase(config, args, "derived", derived_outputs(members))
        membership = await get_json(members_stats)
    plain_figures, derived_figures = phase_figures(plain), phase_figures(derived)
    # the maximum load is what the pipeline sustains end to end: beyond it, acknowledged batches wait in the intake
    maximum = derived_figures["e2e_events_per_s"]
    latency = await latency_phase(config, args, maximum / 2)
    backfill = await backfill_phase(config, args)
    report = {
        "baseline_events_per_s": round(baseline.events_per_s),
        "plain": plain_figures,
        "derived": {**derived_figures, "membership_adds": membership["adds"], "membership_drops": membership["drops"]},
        "ratio_e2e_derived_to_plain": ratio(derived_figures["e2e_events_per_s"], plain_figures["e2e_events_per_s"]),
        "ratio_acked_derived_to_plain": ratio(
            derived_figures["acked_events_per_s"], plain_figures["acked_events_per_s"]
        ),
        "ratio_target": 0.8,
        "calculated_attributes": len(CA_DEFINITIONS),
        "audiences": len(AUDIENCE_CRITERIA),
        "latency": latency,
        "backfill": backfill,
    }
    return write(report, args, "audiences", plot)


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, latency) = plt.subplots(2, 1, figsize=(9, 8))
    labels = ["plain", "derived"]
    rates.bar([f"{label} acked" for label in labels], [report[label]["acked_events_per_s"] for label in labels])
    rates.bar([f"{label} e2e" for label in labels], [report[label]["e2e_events_per_s"] for label in labels])
    rates.set(title=f"events per second (e2e ratio {report['ratio_e2e_derived_to_plain']})")
    quantiles = ("p50", "p90", "p99")
    latency.bar(quantiles, [report["latency"]["membership_latency_ms"].get(q, 0) for q in quantiles])
    latency.axhline(report["latency"]["membership_latency_p99_target_ms"], color="tab:red", linestyle="--")
    latency.set(title="membership latency, 202 → partner's add (ms), at half the maximum")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
