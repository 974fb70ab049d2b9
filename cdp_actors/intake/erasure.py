"""Which raw batches of the intake's environment belong to an erased subject.

The log keeps an accepted batch only until the dispatcher has applied it (then trims it), so a kept batch has
not been resolved to an MPID yet: it is matched by what resolution would read, the identities in the batch
(user and device, as `batch_identities` extracts them, compared exactly by type and value) and its `mpid`.
A dead-lettered batch may not even decode (that can be why it failed): it is matched by the JSON string of one
of the subject's identity values appearing in its raw bytes, the one test that needs no parse.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

from cdp_actors.schema.events import batch_identities, decode_head


def batch_of_subject(raw: bytes, identities: Mapping[str, Collection[str]], mpids: Collection[int]) -> bool:
    """Whether a batch names one of the subject's MPIDs or carries one of their identities (type -> values)."""
    try:
        head = decode_head(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return mentions(raw, identities)
    if head.mpid is not None and head.mpid in mpids:
        return True
    return any(value in identities.get(t, ()) for t, value in batch_identities(head).items())


def mentions(raw: bytes, identities: Mapping[str, Collection[str]]) -> bool:
    """Whether the raw JSON holds one of the identity values as a string."""
    return any(msgspec.json.encode(value) in raw for values in identities.values() for value in values)
