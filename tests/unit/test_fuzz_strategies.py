"""The fuzzer's request rendering: what it claims to send is what goes on the wire."""

from __future__ import annotations

import json

import pytest

from tests.fuzz_strategies import (
    LMDB_MAX_KEY_BYTES,
    Deep,
    KnownMpid,
    Long,
    Many,
    Nan,
    Pooled,
    Renderer,
    families_from,
    text_of_bytes,
)


@pytest.mark.parametrize("fill", ["x", "é", "🦄"])
@pytest.mark.parametrize("size", [256, LMDB_MAX_KEY_BYTES, LMDB_MAX_KEY_BYTES + 1, 3000])
def test_identity_text_has_exactly_the_bytes_asked_for(size: int, fill: str) -> None:
    long = text_of_bytes(size, fill)
    text = Renderer("p").encode(long)[0]
    assert len(text.encode()) == size and fill in text


def test_nan_tokens_deep_nesting_surrogates_and_big_ints_reach_the_wire_raw() -> None:
    body = {"a": Nan(float("inf")), "b": Deep(1000, objects=False), "c": "\ud800", "d": 2**64, "e": -0.0}
    value, raw = Renderer("p").encode(body)
    text = raw.decode()
    assert '"a": Infinity' in text and '"c": "\\ud800"' in text and '"d": 18446744073709551616' in text
    assert '"[' not in text and text.count("[") == 1000 and '"e": -0.0' in text
    assert value["a"] == float("inf")


def test_symbolic_values_resolve_per_example() -> None:
    renderer = Renderer("fz7", known_mpids=[11, 22])
    body = {
        "id": Pooled(2),
        "mpid": KnownMpid(3),
        "text": Long("é", 3, "x"),
        "attrs": Many(3),
        "deleted": Many(2, names=True, size=5),
    }
    assert json.loads(renderer.encode(body)[1]) == {
        "id": "fz7-c2",
        "mpid": 22,
        "text": "éééx",
        "attrs": {"a0": 0, "a1": 1, "a2": 2},
        "deleted": ["d0-zz", "d1-zz"],
    }
    assert "mpid" not in json.loads(Renderer("fz7").encode(body)[1])  # no MPID known yet: left out


def test_unknown_family_is_refused() -> None:
    assert "nan" not in families_from("nan, deep")
    with pytest.raises(ValueError, match="unknown fuzz families"):
        families_from("nope")
