"""Sharding: every key in exactly one shard, stably; bad shard arguments are clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citadel.documents import check_shard, shard_of


@given(st.lists(st.text(max_size=30), max_size=50), st.integers(min_value=1, max_value=16))
def test_every_key_has_exactly_one_stable_shard(keys: list[str], shards: int) -> None:
    assignment = {key: shard_of(key, shards) for key in keys}
    assert all(0 <= shard < shards for shard in assignment.values())
    assert assignment == {key: shard_of(key, shards) for key in keys}


def test_shards_are_reasonably_balanced() -> None:
    counts = [0] * 4
    for n in range(4000):
        counts[shard_of(f"/corpus/doc_{n}.md", 4)] += 1
    assert min(counts) > 800


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("x", 0)
    with pytest.raises(ValueError, match="both shard and shards"):
        check_shard(1, None)
    with pytest.raises(ValueError, match="between 0 and 2"):
        check_shard(3, 3)
    check_shard(None, None)
    check_shard(2, 3)
