"""Point ids: stable uuid5 values that change with every part of a chunk's identity."""

from __future__ import annotations

import hashlib
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.hashing import POINT_NAMESPACE, point_id, sha256_text

_names = st.text(min_size=0, max_size=40)
_positions = st.integers(min_value=0, max_value=10**6)
_hashes = st.text(max_size=30).map(sha256_text)


@settings(max_examples=100, deadline=None)
@given(_names, _names, _positions, _hashes)
def test_point_id_is_stable_valid_uuid(collection: str, document: str, position: int, chunk_hash: str) -> None:
    """The same chunk always gets the same canonical uuid5."""
    first = point_id(collection, document, position, chunk_hash)
    assert first == point_id(collection, document, position, chunk_hash)
    parsed = uuid.UUID(first)
    assert str(parsed) == first
    assert parsed.version == 5


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(_names, _names, _positions, _hashes),
    st.integers(min_value=0, max_value=3),
    st.data(),
)
def test_point_id_changes_with_each_part(base: tuple[str, str, int, str], which: int, data: st.DataObject) -> None:
    """Changing any single one of collection, document, position or chunk hash changes the id."""
    strategies = [_names, _names, _positions, _hashes]
    replacement = data.draw(strategies[which].filter(lambda value: value != base[which]))
    changed = list(base)
    changed[which] = replacement
    assert point_id(*base) != point_id(*changed)


# The separator itself is excluded: ids and collection names never contain control characters.
_safe_names = st.text(alphabet=st.characters(blacklist_characters="\x1f"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(_safe_names, _safe_names, _positions, _hashes),
    st.tuples(_safe_names, _safe_names, _positions, _hashes),
)
def test_distinct_chunk_identities_give_distinct_ids(a: tuple[str, str, int, str], b: tuple[str, str, int, str]) -> None:
    """Two different identities never share a point id (one would overwrite the other)."""
    assert (point_id(*a) == point_id(*b)) == (a == b)


def test_point_id_matches_documented_derivation() -> None:
    """The id is uuid5 of the fixed namespace; changing it would re-key every collection."""
    h = sha256_text("chunk")
    expected = str(uuid.uuid5(POINT_NAMESPACE, f"docs\x1fa.txt\x1f3\x1f{h}"))
    assert point_id("docs", "a.txt", 3, h) == expected
    assert str(POINT_NAMESPACE) == "5c1f0b8e-6a0e-4d1e-9a57-3c2d7e0f4a11"


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_sha256_text_is_hex_digest_of_utf8(text: str) -> None:
    """sha256_text hashes the UTF-8 bytes and returns 64 lowercase hex characters."""
    digest = sha256_text(text)
    assert digest == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")


def test_sha256_text_known_values() -> None:
    """Known vectors, including non-ASCII text."""
    assert sha256_text("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_text("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_text("é") == hashlib.sha256("é".encode()).hexdigest()
    assert sha256_text("é") != hashlib.sha256("é".encode("latin-1")).hexdigest()
