"""Opt-out and GPC, without Ray: the opt-out state's transitions (property-tested against a plain recomputation), the
GPC consent mapping and its setting, the door's marking of a batch, and a shard that writes no outbox rows for an
opted-out user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_actors.config import ConfigError, Gpc, Privacy, WorkspaceConfig, parse_workspace
from cdp_actors.profiles.handoff import membership_changes
from cdp_actors.profiles.model import ConsentRecord, Profile, Stamped
from cdp_actors.profiles.privacy import GPC_DOCUMENT, gpc_consent, is_opted_out, merged_opt_out, opt_out_of
from cdp_actors.profiles.shard import ShardCore
from cdp_actors.profiles.update import apply_batch
from cdp_actors.profiles.views import profile_api_body, user_detail
from cdp_actors.reports import forwarding_report
from cdp_actors.schema.events import BatchError, batch_time_ms, decode_batch, mark_gpc
from cdp_actors.schema.records import OutboxRow, ShardRecord
from serve_apps.events import gpc_signalled, validate_batches
from tests.samples import batch, custom, event

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_760_000_000_000
CCPA_DEFAULT = Gpc(ccpa_data_sale_opt_out=True)


def decoded(**fields: Any) -> Any:
    return decode_batch(msgspec.json.encode({"environment": "production", **fields}))


def opt_out(flag: bool, ts: int | None = None) -> dict[str, Any]:
    return event("opt_out", ts, is_opted_out=flag)


# ---- the opt-out state ------------------------------------------------------------------------------------


def test_the_latest_opt_out_event_by_event_time_decides() -> None:
    later_in_time_first = decoded(events=[opt_out(False, T0 + 5), opt_out(True, T0 + 1)])
    assert opt_out_of(later_in_time_first, T0) == Stamped(False, T0 + 5)
    untimed = decoded(events=[custom("Played", T0 + 9), opt_out(True)])  # at the batch time: its latest event's
    assert opt_out_of(untimed, batch_time_ms(untimed, T0)) == Stamped(True, T0 + 9)
    tie = decoded(events=[opt_out(True, T0), opt_out(False, T0)])
    assert opt_out_of(tie, T0) == Stamped(True, T0)  # a tie goes to opted out
    assert opt_out_of(decoded(events=[custom("Played", T0)]), T0) is None


def test_opting_out_then_back_in_across_batches() -> None:
    profile = Profile(mpid=1)
    profile = apply_batch(profile, decoded(events=[opt_out(True, T0)]), 1, T0).profile
    assert is_opted_out(profile) and profile.opt_out == Stamped(True, T0)
    profile = apply_batch(profile, decoded(events=[custom("Played", T0 + 1)]), 1, T0 + 1).profile
    assert is_opted_out(profile)  # a batch without opt_out changes nothing
    stale = apply_batch(profile, decoded(events=[opt_out(False, T0 - 1)]), 1, T0 + 2).profile
    assert is_opted_out(stale)  # an older opt-in arriving late does not undo a newer opt-out
    back = apply_batch(profile, decoded(events=[opt_out(False, T0 + 3)]), 1, T0 + 3).profile
    assert not is_opted_out(back) and back.opt_out == Stamped(False, T0 + 3)


opt_out_events = st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=0, max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.lists(opt_out_events, min_size=1, max_size=5), st.randoms())
def test_the_state_is_the_newest_opt_out_whatever_the_order_of_batches(batches, rnd) -> None:
    stamped = [[(flag, T0 + ts) for flag, ts in events] for events in batches]
    bodies = [decoded(events=[opt_out(flag, ts) for flag, ts in events]) for events in stamped]
    rnd.shuffle(bodies)
    state = None
    for body in bodies:
        state = merged_opt_out(state, body, T0)
    every = [item for events in stamped for item in events]
    # the plain recomputation: the newest event, opted out on a tie; none when there was none
    expected = max(every, key=lambda item: (item[1], item[0]), default=None)
    assert state == (Stamped(*expected) if expected else None)


# ---- GPC ----------------------------------------------------------------------------------------------------


def test_gpc_maps_to_the_chosen_consent_state() -> None:
    assert gpc_consent(CCPA_DEFAULT, T0) == {
        "ccpa": {"data_sale_opt_out": ConsentRecord(consented=True, timestamp_unixtime_ms=T0, document=GPC_DOCUMENT)}
    }
    assert gpc_consent(Gpc(gdpr_purpose="advertising"), T0) == {
        "gdpr": {"advertising": ConsentRecord(consented=False, timestamp_unixtime_ms=T0, document=GPC_DOCUMENT)}
    }
    assert gpc_consent(None, T0) == {}


def test_a_gpc_batch_records_the_mapping_over_its_own_consent_state() -> None:
    own = {"ccpa": {"data_sale_opt_out": {"consented": False, "timestamp_unixtime_ms": T0}}}
    body = decoded(events=[custom("Played", T0)], consent_state=own, gpc=True)
    applied = apply_batch(Profile(mpid=1), body, 1, T0 + 50, CCPA_DEFAULT)
    record = applied.profile.consent["ccpa"]["data_sale_opt_out"]
    assert (record.consented, record.document, record.timestamp_unixtime_ms) == (True, "gpc", T0)
    assert [n["type"] for n in applied.notifications] == ["ccpa_change"]  # outputs are told, as for any change
    off = apply_batch(Profile(mpid=1), body, 1, T0 + 50, None).profile
    assert off.consent["ccpa"]["data_sale_opt_out"].consented is False  # GPC off: the batch's own state
    unsignalled = apply_batch(Profile(mpid=1), decoded(events=[custom("Played", T0)]), 1, T0, CCPA_DEFAULT)
    assert unsignalled.profile.consent == {}


def workspace_with(privacy: Any) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    data["privacy"] = privacy
    return data


def test_the_privacy_setting_defaults_to_ccpa_accepts_off_and_names_a_bad_field() -> None:
    assert Privacy().gpc == CCPA_DEFAULT
    assert parse_workspace(workspace_with({"gpc": False})).privacy.gpc is None  # YAML's bare `off`
    assert parse_workspace(workspace_with({"gpc": "off"})).privacy.gpc is None
    assert parse_workspace(workspace_with({"gpc": {"gdpr_purpose": "ads"}})).privacy.gpc == Gpc(gdpr_purpose="ads")
    for bad, named in (
        ({"gpc": {"gdpr_purpose": "ads", "ccpa_data_sale_opt_out": True}}, "privacy.gpc: set exactly one"),
        ({"gpc": {}}, "privacy.gpc: set exactly one"),
        ({"gpc": {"gdpr_purpose": ""}}, "privacy.gpc.gdpr_purpose"),
        ({"gpc": {"ccpa": True}}, "privacy.gpc.ccpa"),
        ({"gcp": "off"}, "privacy.gcp"),
    ):
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            parse_workspace(workspace_with(bad))


def test_the_door_marks_each_batch_only_when_the_header_says_1() -> None:
    for raw in (b"{}", b" {\n} \n", b'{"gpc":false,"mpid":5}', json.dumps(batch("u", [custom("x", T0)])).encode()):
        marked = mark_gpc(raw)
        assert decode_batch(marked).gpc is True
        assert msgspec.structs.replace(decode_batch(marked), gpc=None) == msgspec.structs.replace(
            decode_batch(raw), gpc=None
        )
    raw = json.dumps(batch("u", [custom("x", T0)])).encode()
    assert validate_batches([raw], 10_000).accepted[0][1] is raw  # no header: the very bytes, nothing added
    assert validate_batches([raw], 10_000, gpc=True).accepted[0][1] == mark_gpc(raw)
    assert gpc_signalled({"sec-gpc": "1"}) and gpc_signalled({"sec-gpc": " 1 "})
    assert not gpc_signalled({}) and not gpc_signalled({"sec-gpc": "0"}) and not gpc_signalled({"sec-gpc": "true"})


def test_the_door_refuses_flags_that_are_not_booleans_naming_the_field() -> None:
    with pytest.raises(BatchError, match=r"Expected `bool`, got `str` - at `\$\.events\[0\]\.data\.is_opted_out`"):
        decode_batch(json.dumps({"events": [{"event_type": "opt_out", "data": {"is_opted_out": "yes"}}]}).encode())
    with pytest.raises(BatchError, match=r"got `int` - at `\$\.gpc`"):
        decode_batch(b'{"gpc": 1}')


# ---- the shard --------------------------------------------------------------------------------------------

MEMBERS_OUTPUT = 2
NOT_SOLD = {"id": 1, "name": "not sold", "criteria": {"ccpa_data_sale_opt_out": True}}


def shard_workspace() -> WorkspaceConfig:
    data = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    data["outputs"][0]["settings"]["url"] = "http://127.0.0.1:1/events"
    data["outputs"].append(
        {"id": MEMBERS_OUTPUT, "name": "members", "kind": "webhook", "settings": {"url": "http://127.0.0.1:1/m"}}
    )
    data["audiences"] = [{**NOT_SOLD, "connected_outputs": [MEMBERS_OUTPUT]}]
    return parse_workspace(data)


def record(seq: int, mpid: int, events: list[dict], **fields: Any) -> ShardRecord:
    raw = json.dumps(batch(f"user-{mpid}", events, **fields)).encode()
    return ShardRecord(seq, seq, mpid, 1, T0 + seq, raw)


def rows(core: ShardCore) -> list[OutboxRow]:
    with core.store.read() as txn:
        return [msgspec.msgpack.decode(v, type=OutboxRow) for _, v in txn.cursor(core.store.db("outbox"))]


def test_an_opted_out_user_gets_no_outbox_rows_until_opted_back_in(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, shard_workspace(), version=1)
    core.apply([record(1, 7, [custom("Played", T0)])], None)
    opts_out = record(2, 7, [custom("Before", T0 + 1), opt_out(True, T0 + 2), custom("After", T0 + 3)])
    joins = record(3, 7, [custom("Played", T0 + 4)], user_attributes={"plan": "gold"})  # joins the audience
    other = record(4, 8, [custom("Played", T0 + 5)])
    core.apply([opts_out, joins, other], 1)
    assert [(r.seq_of_key, r.mpid) for r in map(_with_seq, rows(core)) if not r.audience] == [(1, 7), (4, 8)]
    counts = dict(core.counts("0", "9"))
    withheld = {k: n for k, n in counts.items() if "|opted_out|" in k}
    assert list(withheld.values()) == [3 + 1]  # both withheld batches' events, for output 1 (the one connection)
    assert forwarding_report(counts.items(), {1: ("demo-webhook", "webhook")})["withheld_opted_out"] == [
        {"output_id": 1, "output": "demo-webhook", "events": 4}
    ]
    stored = core.profile(7)
    assert stored is not None and stored["batches"] == 3  # stored all the same
    assert profile_api_body(7, None, stored, [])["is_opted_out"] is True
    assert user_detail(7, None, stored)["opt_out"] == {"is_opted_out": True, "timestamp_unixtime_ms": T0 + 2}

    core.apply([record(5, 7, [opt_out(False, T0 + 6), custom("Back", T0 + 7)], user_attributes={"x": 1})], 4)
    back = [r for r in rows(core) if r.mpid == 7 and not r.audience_id]
    assert [json.loads(r.payload)["events"][1]["data"]["event_name"] for r in back[1:]] == ["Back"]
    assert profile_api_body(7, None, core.profile(7), [])["is_opted_out"] is False


def ccpa(consented: bool, ts: int) -> dict[str, Any]:
    return {"ccpa": {"data_sale_opt_out": {"consented": consented, "timestamp_unixtime_ms": ts}}}


def membership_actions(core: ShardCore) -> list[str]:
    return [change.action for r in rows(core) if r.audience_id for change in membership_changes(r)]


def test_membership_changes_are_not_sent_while_opted_out_and_erasure_still_drops(tmp_path: Path) -> None:
    core = ShardCore(tmp_path, 0, shard_workspace(), version=1)
    core.apply([record(1, 7, [opt_out(True, T0)], consent_state=ccpa(True, T0))], None)
    assert core.profile(7)["audiences"] and membership_actions(core) == []  # joined while opted out: not sent
    core.apply([record(2, 7, [opt_out(False, T0 + 1)])], 1)
    core.apply([record(3, 7, [], consent_state=ccpa(False, T0 + 2))], 2)
    core.apply([record(4, 7, [], consent_state=ccpa(True, T0 + 3))], 3)
    assert membership_actions(core) == ["delete", "add"]
    core.apply([record(5, 7, [opt_out(True, T0 + 4)], consent_state=ccpa(False, T0 + 4))], 4)
    assert membership_actions(core) == ["delete", "add"]  # left while opted out: not sent
    core.apply([record(6, 7, [], consent_state=ccpa(True, T0 + 5))], 5)
    core.erase([7], T0 + 10)
    # the erasure removed the user's pending rows and wrote its drop: sent although the user is opted out
    assert membership_actions(core) == ["delete"]


class _Keyed(msgspec.Struct):
    seq_of_key: int
    mpid: int
    audience: bool


def _with_seq(row: OutboxRow) -> _Keyed:
    return _Keyed(int.from_bytes(row.key[6:14], "big"), row.mpid, bool(row.audience_id))
