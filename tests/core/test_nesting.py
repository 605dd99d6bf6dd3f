"""The nesting scan that guards every request body and JSON workflow file: exact on JSON, and
linear on anything, so a hostile megabyte costs no more than an honest one."""

from __future__ import annotations

import json
import time

import pytest

from citadel.nesting import json_depth_exceeds

MIB = 1024 * 1024


@pytest.mark.parametrize("depth", [1, 5, 63, 64, 65, 200])
def test_the_depth_of_json_is_counted_exactly(depth: int) -> None:
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value, "s": "]]}}"}
    text = json.dumps(value)
    assert json_depth_exceeds(text, 64) is (depth > 64)
    assert json_depth_exceeds(text.encode(), depth) is False and json_depth_exceeds(text, depth - 1) is True


def test_brackets_in_strings_and_escaped_quotes_do_not_count() -> None:
    assert not json_depth_exceeds(json.dumps({"a": "[" * 500, "b": '\\"[{' * 300, "c": "\\" * 9 + "{" * 100}), 64)
    assert json_depth_exceeds('{"a": "\\\\", "b": ' + "[" * 65 + "]" * 65 + "}", 64)


@pytest.mark.parametrize("text", [
    "[" * (MIB // 2) + "]" * (MIB // 2),
    "[" + ",".join(["[1]"] * (MIB // 4)) + "]",
    '["' + '\\"' * (MIB // 2),
    '\\"' * (MIB // 2) + "[" * 100,
    '"' * MIB,
    "[" * 100 + '"' + "a\\" * (MIB // 2),
    "[" + ",".join(['"[x"'] * (MIB // 6)) + "]",
], ids=["brackets", "flat", "open string of escapes", "escapes then brackets", "quotes", "unterminated", "strings"])
def test_a_hostile_megabyte_is_scanned_in_linear_time(text: str) -> None:
    started = time.perf_counter()
    json_depth_exceeds(text, 64)
    assert time.perf_counter() - started < 1.5
