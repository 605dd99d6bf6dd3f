"""Float32 codec: exact round trips, 4 bytes per dimension, wrong lengths refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.embedders.codec import decode_vector, encode_vector

_vectors = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=0, max_size=64)


@settings(max_examples=150, deadline=None)
@given(_vectors)
def test_round_trip_is_exact(values: list[float]) -> None:
    """Any float32-representable vector decodes to exactly the values encoded."""
    data = encode_vector(values)
    assert isinstance(data, bytes)
    assert len(data) == 4 * len(values)
    decoded = decode_vector(data, len(values))
    assert decoded.dtype == np.float32
    assert decoded.shape == (len(values),)
    assert decoded.tolist() == values


@settings(max_examples=50, deadline=None)
@given(_vectors)
def test_numpy_input_encodes_like_list(values: list[float]) -> None:
    """An ndarray (any float dtype) and the equivalent list give identical bytes."""
    assert encode_vector(np.asarray(values, dtype=np.float64)) == encode_vector(values)


def test_bytes_are_little_endian_float32() -> None:
    """The wire format is raw little-endian float32, readable by any client."""
    assert encode_vector([1.0, -2.5]) == struct.pack("<2f", 1.0, -2.5)


def test_decoded_vector_is_writable_copy() -> None:
    """Decoding returns an independent float32 array, not a read-only view of the bytes."""
    vector = decode_vector(encode_vector([1.0, 2.0]))
    vector[0] = 5.0
    assert vector.tolist() == [5.0, 2.0]


def test_decode_without_dimensions_accepts_any_multiple_of_four() -> None:
    """With no expected size the length just has to be whole floats."""
    assert decode_vector(encode_vector([0.5] * 7)).shape == (7,)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 7, 13])
def test_length_not_multiple_of_four_raises(length: int) -> None:
    """Truncated bytes are refused rather than silently misread."""
    with pytest.raises(ValueError, match=f"has {length} bytes, not a multiple of 4"):
        decode_vector(b"\x01" * length)


def test_wrong_dimensions_raise() -> None:
    """A vector of another model's size is refused."""
    data = encode_vector([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="has 3 dimensions, expected 4"):
        decode_vector(data, 4)
    with pytest.raises(ValueError, match="has 3 dimensions, expected 2"):
        decode_vector(data, 2)
