"""References: found anywhere in parameters, typed when whole, interpolated as text when embedded."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.workflows import Reference, UnresolvedReference, find_references, resolve
from citadel.workflows.references import find_malformed, is_reference, referenced_steps

OUTPUTS = {
    "chunk": {"chunks": [{"text": "alpha", "start": 0}, {"text": "beta", "start": 5}], "texts": ["alpha", "beta"]},
    "embed": {"dimensions": 384, "ratio": 0.5, "ok": True, "none": None},
    "v1.2": {"x": 1},
}
CONTEXT = {"collection": "docs", "limits": {"top": 3}, "tags": ["a", "b"]}


def test_find_references_walks_nested_values_in_order() -> None:
    """Every reference is found with where it sits, whether it is the whole string, and its parts."""
    params = {
        "texts": "${steps.chunk.output.texts}",
        "nested": {"items": ["x", "first ${context.collection} then ${steps.embed.output.dimensions}"]},
        "whole": "${steps.embed.output}",
        "plain": "no reference, ${HOME} is shell text",
        "number": 3,
    }
    refs = find_references(params)
    assert refs == [
        Reference("${steps.chunk.output.texts}", "steps", "chunk", ("texts",), ("texts",), True),
        Reference("${context.collection}", "context", None, ("collection",), ("nested", "items", 1), False),
        Reference("${steps.embed.output.dimensions}", "steps", "embed", ("dimensions",), ("nested", "items", 1), False),
        Reference("${steps.embed.output}", "steps", "embed", (), ("whole",), True),
    ]
    assert refs[0].dotted == "steps.chunk.output.texts"
    assert referenced_steps(params) == {"chunk", "embed"}
    assert find_malformed(params) == []


def test_step_ids_with_dots_parse() -> None:
    """A step id may contain dots; the id ends at the first ``.output``."""
    (ref,) = find_references("${steps.v1.2.output.x}")
    assert (ref.step_id, ref.path) == ("v1.2", ("x",))
    assert resolve("${steps.v1.2.output.x}", OUTPUTS, CONTEXT) == 1


def test_whole_reference_keeps_its_type() -> None:
    """A string that is exactly one reference becomes the value itself: list, dict, number, bool, None."""
    assert resolve("${steps.chunk.output.texts}", OUTPUTS, CONTEXT) == ["alpha", "beta"]
    assert resolve("${steps.chunk.output.chunks.1}", OUTPUTS, CONTEXT) == {"text": "beta", "start": 5}
    assert resolve("${steps.chunk.output.chunks.0.text}", OUTPUTS, CONTEXT) == "alpha"
    assert resolve("${steps.embed.output.dimensions}", OUTPUTS, CONTEXT) == 384
    assert resolve("${steps.embed.output.ratio}", OUTPUTS, CONTEXT) == 0.5
    assert resolve("${steps.embed.output.ok}", OUTPUTS, CONTEXT) is True
    assert resolve("${steps.embed.output.none}", OUTPUTS, CONTEXT) is None
    assert resolve("${steps.embed.output}", OUTPUTS, CONTEXT) is OUTPUTS["embed"]
    assert resolve("${context.limits}", OUTPUTS, CONTEXT) == {"top": 3}
    assert resolve("${context.tags.1}", OUTPUTS, CONTEXT) == "b"
    assert is_reference("${context.tags}") and not is_reference("x ${context.tags}") and not is_reference(3)


def test_embedded_reference_is_interpolated_as_text() -> None:
    """Inside longer text, strings stay as they are and other values read as JSON."""
    text = "top ${context.limits.top} of ${context.collection}: ${steps.chunk.output.texts} ok=${steps.embed.output.ok}"
    assert resolve(text, OUTPUTS, CONTEXT) == 'top 3 of docs: ["alpha", "beta"] ok=true'
    assert resolve("${context.collection}${context.collection}", OUTPUTS, CONTEXT) == "docsdocs"
    assert resolve("cost ${HOME} stays", OUTPUTS, CONTEXT) == "cost ${HOME} stays"


def test_resolve_walks_containers_without_changing_them() -> None:
    """Dicts and lists are rebuilt with references replaced; the input is left untouched."""
    params = {"a": ["${context.tags}", {"b": "${steps.embed.output.dimensions}"}], "n": 1, "t": ("${context.collection}",)}
    before = json.dumps(params, default=list)
    assert resolve(params, OUTPUTS, CONTEXT) == {"a": [["a", "b"], {"b": 384}], "n": 1, "t": ("docs",)}
    assert json.dumps(params, default=list) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${steps.missing.output.x}", "no output of step 'missing'"),
        ("${steps.chunk.output.nope}", "steps.chunk.output has no key 'nope' (keys: chunks, texts)"),
        ("${steps.chunk.output.chunks.7.text}", "steps.chunk.output.chunks has no index 7 (length 2)"),
        ("${steps.chunk.output.chunks.first}", "steps.chunk.output.chunks is a list; 'first' is not an index"),
        ("${steps.embed.output.dimensions.size}", "steps.embed.output.dimensions is int, not a mapping or list: it has no 'size'"),
        ("${context.limits.bottom}", "context.limits has no key 'bottom'"),
        ("in text ${context.absent}", "context has no key 'absent'"),
        ("${steps.chunk.outputs.x}", "malformed reference"),
    ],
)
def test_unresolved_reference_names_the_missing_path(text: str, message: str) -> None:
    """The error names the reference and the part of its path that does not exist."""
    with pytest.raises(UnresolvedReference) as caught:
        resolve({"p": [text]}, OUTPUTS, CONTEXT)
    assert message in str(caught.value)
    assert str(caught.value).startswith("${")
    assert isinstance(caught.value, LookupError)


def test_malformed_references_are_found() -> None:
    """Tokens that look like references but do not parse are reported with a reason."""
    bad = find_malformed({"a": "${steps.x}", "b": ["${context.}", "${steps.a.output..b}", "${context}"], "c": "${OTHER}"})
    assert [(m.text, m.where) for m in bad] == [
        ("${steps.x}", ("a",)),
        ("${context.}", ("b", 0)),
        ("${steps.a.output..b}", ("b", 1)),
        ("${context}", ("b", 2)),
    ]
    assert "expected ${steps.<step_id>.output" in bad[0].reason


_keys = st.text(alphabet="abcxyz_", min_size=1, max_size=6)
_scalars = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), st.text(alphabet="pqr st", max_size=8))
_values = st.recursive(
    _scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)), max_leaves=12
)


def _paths(value: object, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    found = [(prefix, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, str(index))))
    return found


@settings(max_examples=150, deadline=None)
@given(output=_values, data=st.data())
def test_any_path_resolves_typed_and_interpolates_as_text(output: object, data: st.DataObject) -> None:
    """For any path into any output: the whole reference gives that value, embedded gives its text."""
    path, expected = data.draw(st.sampled_from(_paths(output)))
    ref = "${steps.s.output" + "".join(f".{part}" for part in path) + "}"
    assert resolve(ref, {"s": output}, {}) == expected
    embedded = resolve(f"<{ref}>", {"s": output}, {})
    assert embedded == "<" + (expected if isinstance(expected, str) else json.dumps(expected)) + ">"
    context_ref = "${context.root" + "".join(f".{part}" for part in path) + "}"
    assert resolve([context_ref], {}, {"root": output}) == [expected]
