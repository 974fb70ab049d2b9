"""Which raw batches of the intake's environment belong to an erased subject.

The log keeps an accepted batch only until the dispatcher has applied it (then trims it), so a kept batch has
not been resolved to an MPID yet: it is matched by what resolution would read, the identities in the batch
(user and device, as `batch_identities` extracts them, compared exactly by type and value) and its `mpid`.
A dead-lettered batch may not even decode (that can be why it failed): it is matched by the JSON string of one
of the subject's identity values appearing in its raw bytes, the one test that needs no parse.

The deduplication index keeps each batch's `source_request_id` for days after the batch is trimmed. An id is the
client's choice and may embed the user's identifier (`<customer id>-<n>`): an id holding one of the subject's
identity values (of at least MIN_EMBEDDED_CHARS characters) is removed with the rest, so that no byte of it stays.
A batch with such an id sent again afterwards is accepted again, as new data for the subject would be.
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


MIN_EMBEDDED_CHARS = 4
"""Shorter identity values are not looked for inside request ids: a value like `42` would match unrelated ids and
drop their deduplication for nothing."""


def names_subject(source_request_id: bytes, identities: Mapping[str, Collection[str]]) -> bool:
    """Whether a deduplication key (a `source_request_id`, after its input id) embeds one of the values."""
    return any(
        len(value) >= MIN_EMBEDDED_CHARS and value.encode() in source_request_id
        for values in identities.values()
        for value in values
    )


def mentions(raw: bytes, identities: Mapping[str, Collection[str]]) -> bool:
    """Whether the raw JSON holds one of the identity values as a string."""
    return any(msgspec.json.encode(value) in raw for values in identities.values() for value in values)
