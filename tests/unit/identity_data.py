"""Hypothesis generators for the identity tests: policies of every strategy, identity values as the door
lets them in (long, unicode), and MPIDs over the whole signed 64-bit range."""

from __future__ import annotations

from hypothesis import strategies as st

from cdp_actors.identity import strategy
from cdp_actors.identity.strategy import Policy

DOOR_MAX_IDENTITY_BYTES = 480
"""The longest identity value the door accepts, in UTF-8 bytes (`MAX_IDENTITY_BYTES` in
cdp_actors/schema/events.py of the door validation work): type + NUL + value stays under LMDB's 511 bytes."""
MPID_MIN, MPID_MAX = -(2**63), 2**63 - 1

TYPES = ("customer_id", "email", "other", "ios_idfv", "android_uuid")
LONGEST = tuple(character * (DOOR_MAX_IDENTITY_BYTES // len(character.encode())) for character in "xé\U0001f600")
identity_values = st.one_of(
    st.sampled_from(["a", "b", "c"]),  # the same identity in several requests: claims, moves, orphans
    st.sampled_from(LONGEST),  # the longest values in 1-, 2- and 4-byte characters, also repeated
    st.text(min_size=1, max_size=DOOR_MAX_IDENTITY_BYTES // 4),  # any script, NUL included: always fits
    st.text(st.characters(max_codepoint=0x7F), min_size=1, max_size=DOOR_MAX_IDENTITY_BYTES),
)
identity_requests = st.dictionaries(st.sampled_from(TYPES), identity_values, min_size=1, max_size=3)
batch_requests = st.dictionaries(st.sampled_from(TYPES), identity_values, max_size=3)
"""A batch may carry no identities at all."""
mpids = st.integers(MPID_MIN, MPID_MAX).filter(bool)  # 0 is "no MPID" on the wire
STRATEGIES = (strategy.CONVERSION, strategy.LINK, strategy.ISOLATION, strategy.BEST_MATCH)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """A policy as a workspace may configure it: any strategy, priority, unique, login and immutable IDs
    (None takes the strategy's defaults; Best Match takes none, as the configuration requires)."""
    name = draw(st.sampled_from(STRATEGIES))
    priority = draw(st.permutations(TYPES))
    if name == strategy.BEST_MATCH:
        return Policy.of(name, priority)
    keys = st.none() | st.sets(st.sampled_from(TYPES), max_size=3)
    immutable = draw(st.sets(st.sampled_from(TYPES), max_size=1))
    return Policy.of(name, priority, draw(keys), draw(keys), immutable)
