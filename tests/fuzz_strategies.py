"""Hypothesis strategies for the pipeline fuzzer: hostile Events API batches, IDSync calls and admin edits.

A strategy draws an abstract operation; `Renderer` turns it into the exact request bytes at run time, because
what makes requests unique (source_request_ids, identity pools per example, MPIDs seen so far) is only known
then. Edge values come in named families, so a run can leave out a family whose bug is known (`CDP_FUZZ_SKIP`).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.samples import COMMERCE_VARIANTS, EVENT_DATA

LMDB_MAX_KEY_BYTES = 511  # LMDB's default key limit: identity values are index keys
T0 = 1_700_000_000_000  # epoch ms the replay users' events start at
STEP_MS = 1_000  # a replay user's batch n has its events at T0 + n * STEP_MS: send order is time order
POOL = 4  # shared identities per example, so profiles merge and IDSync finds them
REPLAY_USERS = 3  # users per example only ever sent plain Events API batches: their profiles must equal a replay
ATTRIBUTE_NAMES = ("plan", "city", "n", "score", "tags", "ünï", "🦄", "$firstname", "x" * 256)

# The families of edge values, each tied to a known way to break the pipeline (issue 13).
FAMILIES = (
    "big_int",  # integers outside signed 64 bits: MPIDs, timestamps, attribute values
    "nan",  # NaN and Infinity tokens in raw JSON
    "long_identity",  # identity values past LMDB's 511-byte key limit
    "deep",  # nesting ~1000 levels deep
    "money",  # negative and huge commerce amounts
    "many_deletes",  # thousands of long deleted_user_attributes names
    "unknown_mpid",  # batch and edit MPIDs nobody was given
    "long_name",  # event and screen names past the key limit (report counters are keyed by them)
)


NOT_BOOLEANS = ("true", 1, 0, [], {}, "x" * 300)
"""Values of boolean flags (`is_opted_out`, `gpc`) that the door refuses with a 400 naming the field."""
GPC_HEADERS = ("1", "1 ", "0", "true", "1, 1", "x" * 2000)  # no leading space: the client refuses it


# ---- symbolic values, resolved when the request is rendered ----------------------------------------------


@dataclass(frozen=True)
class Pooled:
    """The example's k-th shared identity value."""

    k: int


@dataclass(frozen=True)
class KnownMpid:
    """The i-th MPID the platform answered with so far (modulo how many), or none yet."""

    i: int


@dataclass(frozen=True)
class Deep:
    """A JSON value nested `depth` levels deep (lists or objects), spliced into the encoded text."""

    depth: int
    objects: bool


@dataclass(frozen=True)
class Nan:
    """A non-finite float written as its JSON token (`NaN`, `Infinity`, `-Infinity`)."""

    value: float


@dataclass(frozen=True)
class Long:
    """`fill` repeated `n` times, then `tail` (symbolic, so a failing example prints short)."""

    fill: str
    n: int
    tail: str = ""


@dataclass(frozen=True)
class Many:
    """`n` generated entries: attributes `{"a0": 0, ...}` or deleted names `["d0-zzz...", ...]` of `size` chars."""

    n: int
    names: bool = False
    size: int = 0


@dataclass
class BatchSpec:
    body: dict[str, Any]
    replay_user: int | None = None  # set: a replay user's batch (customer_id only, stamped events)


@dataclass
class EventsOp:
    bulk: bool
    batches: list[BatchSpec]
    gpc_header: str | None = None  # `Sec-GPC`: only "1" means a signal; the rest must change nothing


@dataclass
class IdSyncOp:
    operation: str  # identify | login | logout | search | modify
    body: dict[str, Any]
    mpid: Any = None  # the path MPID of a modify


@dataclass
class EditOp:
    mpid: Any
    body: dict[str, Any]
    marker_value: Any = "m"  # the value of the edit's own attribute, which its delivery must carry unchanged


Op = EventsOp | IdSyncOp | EditOp


# ---- edge values -----------------------------------------------------------------------------------------


def ints(families: frozenset[str]) -> st.SearchStrategy[int]:
    edges = [0, -1, 1, 2**31, -(2**31), 2**53, 2**53 + 1, 2**63 - 1, -(2**63)]
    if "big_int" in families:
        edges += [2**63, 2**64, 2**64 - 1, -(2**63) - 1, 10**30, -(10**40)]
    return st.one_of(st.sampled_from(edges), st.integers(-(2**63), 2**63 - 1))


def floats(families: frozenset[str]) -> st.SearchStrategy[Any]:
    edges: list[Any] = [-0.0, 0.5, 1e308, -1e308, 5e-324, 2.0**53]
    if "nan" in families:
        edges += [Nan(math.nan), Nan(math.inf), Nan(-math.inf)]
    return st.one_of(st.sampled_from(edges), st.floats(allow_nan=False, allow_infinity=False))


def texts(max_bytes: int = 6000, surrogates: bool = True) -> st.SearchStrategy[str]:
    """Short and long text: unicode, emoji, NUL, and (in raw JSON) lone surrogate escapes."""
    alphabet = st.characters(blacklist_categories=("Cs",) if not surrogates else ())
    return st.one_of(
        st.text(alphabet, max_size=12),
        st.sampled_from(["", "\x00", "🦄" * 3, "a\x00b", "\u202e", "e\u0301"]),
        st.builds(Long, st.sampled_from(["x", "é", "🦄", "\x00"]), st.integers(1, max_bytes // 4)),
    )


def identity_values(families: frozenset[str]) -> st.SearchStrategy[Any]:
    """Pooled values (shared between batches, so profiles merge), and edge text up to and past 511 UTF-8 bytes."""
    limits = [256]
    if "long_identity" in families:  # the index key is the type and the value: 500 bytes already fail today
        limits += [500, LMDB_MAX_KEY_BYTES - 1, LMDB_MAX_KEY_BYTES, LMDB_MAX_KEY_BYTES + 1, 600, 3000]
    at_limit = st.builds(text_of_bytes, st.sampled_from(limits), st.sampled_from(["x", "é", "🦄"]))
    return st.one_of(st.builds(Pooled, st.integers(0, POOL - 1)), texts(400, surrogates=False), at_limit)


def text_of_bytes(size: int, fill: str) -> Long:
    """Text of exactly `size` UTF-8 bytes, mostly `fill` (1, 2 or 4 bytes a character), padded with "x"."""
    width = len(fill.encode())
    return Long(fill, size // width, "x" * (size % width))


def scalars(families: frozenset[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), ints(families), floats(families), texts())


def attribute_values(families: frozenset[str], replayable: bool = False) -> st.SearchStrategy[Any]:
    """What `user_attributes` hold: scalars and lists of strings. Replayable values compare equal after a round
    trip: no lone surrogates (JSON encoders may replace them)."""
    text = texts(surrogates=not replayable)
    plain = st.one_of(st.none(), st.booleans(), ints(families), floats(families), text)
    lists = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(["", "🦄", "x" * 513])), max_size=4)
    values = st.one_of(plain, lists)
    if "deep" in families and not replayable:
        values = st.one_of(values, st.builds(Deep, st.sampled_from([200, 990, 1000, 3000]), st.booleans()))
    return values


def attribute_maps(families: frozenset[str], replayable: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    names = st.one_of(st.sampled_from(ATTRIBUTE_NAMES), st.text(max_size=10))
    small = st.dictionaries(names, attribute_values(families, replayable), max_size=5)
    if replayable:
        return small
    huge = st.builds(Many, st.sampled_from([101, 2000]))
    return st.one_of(small, small, small, huge)


def deleted_names(families: frozenset[str]) -> st.SearchStrategy[list[str]]:
    few = st.lists(st.one_of(st.sampled_from(ATTRIBUTE_NAMES), st.text(max_size=6)), max_size=3)
    if "many_deletes" not in families:
        return few
    many = st.builds(Many, st.sampled_from([1000, 3000]), st.just(True), st.sampled_from([30, 100]))
    return st.one_of(few, few, many)


def mpids(families: frozenset[str]) -> st.SearchStrategy[Any]:
    choices = [st.builds(KnownMpid, st.integers(0, 50))]
    if "unknown_mpid" in families:
        choices.append(st.sampled_from([0, -1, 1, 12345, 2**63 - 1, -(2**63)]))
    if "big_int" in families:
        choices.append(st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**25]))
    return st.one_of(choices)


def timestamps(families: frozenset[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.just(T0), st.integers(0, 2**44), ints(families))


# ---- events ----------------------------------------------------------------------------------------------


def amounts(families: frozenset[str]) -> st.SearchStrategy[Any]:
    plain = st.one_of(st.just(99.0), st.floats(0, 1e6, allow_nan=False), st.integers(0, 10**6))
    if "money" not in families:
        return plain
    return st.one_of(plain, st.sampled_from([-1.0, -99.5, 1e17, 1.8e17, 2e19, 1e300, -1e300]))


@st.composite
def events(draw: st.DrawFn, families: frozenset[str]) -> dict[str, Any]:
    # commerce events one time in three: only purchases feed the revenue counters
    event_type = draw(st.one_of(st.sampled_from(sorted(EVENT_DATA)), st.just("commerce_event")))
    data = copy.deepcopy(EVENT_DATA[event_type])
    if event_type == "commerce_event":
        variant = draw(st.sampled_from(["purchase", "refund", *COMMERCE_VARIANTS]))
        if variant in COMMERCE_VARIANTS:
            data.pop("product_action")
            data.update(copy.deepcopy(COMMERCE_VARIANTS[variant]))
        else:
            action = data["product_action"]
            action["action"] = variant
            action["total_amount"] = draw(amounts(families))
            action["products"][0]["price"] = draw(amounts(families))
            action["products"][0]["quantity"] = draw(amounts(families))
    if event_type == "opt_out":  # never true: an opted-out user's batches are not delivered (invariant 3)
        data["is_opted_out"] = draw(st.one_of(st.just(False), st.sampled_from(NOT_BOOLEANS)))
    if event_type == "crash_report" and "deep" in families and draw(st.booleans()):
        data["breadcrumbs"] = draw(st.builds(Deep, st.sampled_from([100, 985, 1000, 5000]), st.booleans()))
    if draw(st.booleans()):
        data["custom_attributes"] = draw(st.dictionaries(st.text(max_size=8), scalars(families), max_size=4))
    names = st.one_of(st.just("Played"), texts(300))
    if "long_name" in families:
        names = st.one_of(names, st.builds(text_of_bytes, st.sampled_from([600, 3000]), st.just("x")))
    if event_type == "custom_event":
        data["event_name"] = draw(names)
    if event_type == "screen_view":
        data["screen_name"] = draw(names)
    data["timestamp_unixtime_ms"] = draw(timestamps(families))
    if data["timestamp_unixtime_ms"] is None:
        del data["timestamp_unixtime_ms"]
    return {"event_type": event_type, "data": data}


@st.composite
def batches(draw: st.DrawFn, families: frozenset[str]) -> BatchSpec:
    body: dict[str, Any] = {
        "environment": draw(st.sampled_from(["production", "development"])),
        "events": draw(st.lists(events(families), max_size=4)),
    }
    identities = draw(
        st.dictionaries(
            st.sampled_from(["customer_id", "email", "other", "customerid"]), identity_values(families), max_size=2
        )
    )
    if identities:
        body["user_identities"] = identities
    if draw(st.integers(0, 4)) == 0:
        body["device_info"] = {"ios_idfv": draw(identity_values(families))}
    if draw(st.integers(0, 4)) == 0:
        body["mp_deviceid"] = draw(identity_values(families))
    if draw(st.integers(0, 3)) == 0:
        body["mpid"] = draw(mpids(families))
    if draw(st.booleans()):
        body["user_attributes"] = draw(attribute_maps(families))
    if draw(st.integers(0, 3)) == 0:
        body["deleted_user_attributes"] = draw(deleted_names(families))
    if draw(st.integers(0, 5)) == 0:
        body["timestamp_unixtime_ms"] = draw(ints(families))
    if draw(st.integers(0, 5)) == 0:  # the GPC flag (a consent state on the profile: the batch is still delivered)
        body["gpc"] = draw(st.one_of(st.booleans(), st.none(), st.sampled_from(NOT_BOOLEANS)))
    return BatchSpec(body)


@st.composite
def replay_batches(draw: st.DrawFn, families: frozenset[str]) -> BatchSpec:
    """A replay user's batch: its customer_id only, 1-2 custom events (stamped at render time), attributes set
    and deleted, never the same name both set and deleted."""
    attributes = draw(attribute_maps(families, replayable=True))
    deleted = [n for n in draw(st.lists(st.sampled_from(ATTRIBUTE_NAMES), max_size=2)) if n not in attributes]
    body: dict[str, Any] = {
        "environment": "production",
        "events": [
            {"event_type": "custom_event", "data": {"event_name": "replay", "custom_event_type": "other"}}
            for _ in range(draw(st.integers(1, 2)))
        ],
    }
    if attributes:
        body["user_attributes"] = attributes
    if deleted:
        body["deleted_user_attributes"] = deleted
    return BatchSpec(body, replay_user=draw(st.integers(0, REPLAY_USERS - 1)))


def events_ops(families: frozenset[str]) -> st.SearchStrategy[EventsOp]:
    one = st.one_of(batches(families), batches(families), replay_batches(families))
    gpc = st.one_of(st.none(), st.none(), st.sampled_from(GPC_HEADERS))
    return st.one_of(
        st.builds(lambda b, h: EventsOp(False, [b], h), one, gpc),
        st.builds(lambda bs, h: EventsOp(True, bs, h), st.lists(one, min_size=1, max_size=6), gpc),
    )


# ---- IDSync and edits ------------------------------------------------------------------------------------


@st.composite
def idsync_ops(draw: st.DrawFn, families: frozenset[str]) -> IdSyncOp:
    operation = draw(st.sampled_from(["identify", "login", "logout", "search", "modify"]))
    names = st.sampled_from(["customerid", "email", "other", "ios_idfv", "device_application_stamp"])
    if operation == "modify":
        changes = draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "identity_type": names,
                        "old_value": st.one_of(st.none(), identity_values(families)),
                        "new_value": st.one_of(st.none(), identity_values(families)),
                    }
                ),
                min_size=1,
                max_size=2,
            )
        )
        return IdSyncOp("modify", {"identity_changes": changes}, draw(mpids(families)))
    body: dict[str, Any] = {
        "environment": "production",
        "known_identities": draw(st.dictionaries(names, identity_values(families), min_size=1, max_size=2)),
    }
    if operation in ("identify", "login") and draw(st.booleans()):
        body["previous_mpid"] = draw(mpids(families))
    return IdSyncOp(operation, body)


@st.composite
def edit_ops(draw: st.DrawFn, families: frozenset[str]) -> EditOp:
    values = st.one_of(
        st.none(), st.booleans(), ints(families), floats(families), texts(), st.lists(st.text(max_size=6), max_size=3)
    )
    body: dict[str, Any] = {
        "input_id": 1,
        "user_attributes": draw(st.dictionaries(st.sampled_from(ATTRIBUTE_NAMES), values, max_size=3)),
    }
    if draw(st.booleans()):
        body["deleted_user_attributes"] = draw(deleted_names(families))
    if draw(st.booleans()):
        body["identities"] = draw(
            st.dictionaries(
                st.sampled_from(["customer_id", "email", "ios_idfv"]), identity_values(families), max_size=2
            )
        )
    if draw(st.booleans()):
        body["gdpr"] = {"marketing": draw(st.booleans())}
    marker_value = draw(
        st.one_of(
            st.booleans(),
            ints(families),
            floats(families),
            texts(surrogates=False),
            st.lists(st.text(max_size=6), max_size=3),
        )
    )
    return EditOp(draw(mpids(families)), body, marker_value)


def operations(families: frozenset[str], max_ops: int = 12) -> st.SearchStrategy[list[Op]]:
    op = st.one_of(events_ops(families), events_ops(families), idsync_ops(families), edit_ops(families))
    return st.lists(op, min_size=1, max_size=max_ops)


# ---- rendering -------------------------------------------------------------------------------------------


@dataclass
class Renderer:
    """Turns symbolic values into request bytes for one example: `prefix` makes its identities its own."""

    prefix: str
    known_mpids: list[int] = field(default_factory=list)

    def identity(self, k: int) -> str:
        return f"{self.prefix}-c{k}"

    def mpid(self, value: Any) -> int | None:
        if isinstance(value, KnownMpid):
            return self.known_mpids[value.i % len(self.known_mpids)] if self.known_mpids else None
        return value

    def resolve(self, value: Any, splices: dict[str, str]) -> Any:
        if isinstance(value, Pooled):
            return self.identity(value.k)
        if isinstance(value, Long):
            return value.fill * value.n + value.tail
        if isinstance(value, Many):
            return (
                [f"d{i}-".ljust(value.size, "z") for i in range(value.n)]
                if value.names
                else {f"a{i}": i for i in range(value.n)}
            )
        if isinstance(value, KnownMpid):
            return self.mpid(value)
        if isinstance(value, Deep):
            marker = f"@@splice-{len(splices)}@@"
            splices[f'"{marker}"'] = nested_text(value)
            return marker
        if isinstance(value, Nan):
            marker = f"@@splice-{len(splices)}@@"
            splices[f'"{marker}"'] = json.dumps(value.value)
            return marker
        if isinstance(value, dict):
            return {k: self.resolve(v, splices) for k, v in value.items() if not _unresolved(self, v)}
        if isinstance(value, list):
            return [self.resolve(v, splices) for v in value]
        return value

    def encode(self, value: Any) -> tuple[Any, bytes]:
        """(the value as sent, with NaN tokens as floats and deep values as markers; the exact JSON bytes)."""
        splices: dict[str, str] = {}
        resolved = self.resolve(value, splices)
        text = json.dumps(resolved)  # ensure_ascii: lone surrogates become `\ud800` escapes
        for marker, replacement in splices.items():
            text = text.replace(marker, replacement)
        return _with_floats(resolved, splices), text.encode()


def _unresolved(renderer: Renderer, value: Any) -> bool:
    """An MPID reference with no MPID known yet: the field is left out."""
    return isinstance(value, KnownMpid) and not renderer.known_mpids


def _with_floats(value: Any, splices: dict[str, str]) -> Any:
    """The sent value as Python sees it: NaN markers back to floats (for the replay model)."""
    tokens = {marker.strip('"'): text for marker, text in splices.items()}

    def back(v: Any) -> Any:
        if isinstance(v, str) and v in tokens:
            token = tokens[v]
            return float(token.replace("Infinity", "inf")) if token in ("NaN", "Infinity", "-Infinity") else v
        if isinstance(v, dict):
            return {k: back(x) for k, x in v.items()}
        if isinstance(v, list):
            return [back(x) for x in v]
        return v

    return back(value)


def nested_text(deep: Deep) -> str:
    if deep.objects:
        return '{"a":' * deep.depth + "1" + "}" * deep.depth
    return "[" * deep.depth + "1" + "]" * deep.depth


def families_from(skip: str) -> frozenset[str]:
    """Every family but those named (comma-separated) in `skip`; unknown names are an error."""
    names = {n.strip() for n in skip.split(",") if n.strip()}
    unknown = names - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown fuzz families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    return frozenset(FAMILIES) - names
