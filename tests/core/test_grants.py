"""What a key's grants reach: collection patterns, blue-green versions, variants of a name, and sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.documents import SourceRoots
from citadel.errors import ConfigurationError
from citadel.grants import Grants, parse_collections, parse_sources


def test_patterns_reach_their_names_and_nothing_else() -> None:
    team = Grants(parse_collections("team-a-*,shared"))
    assert team.reaches("team-a-docs") and team.reaches("shared")
    assert not team.reaches("team-b-docs") and not team.reaches("shared2") and not team.reaches("team-a")
    assert not Grants().reaches("anything") and not Grants().every_collection
    assert Grants(("*",)).every_collection and Grants(everything=True).reaches("team-b-docs")


def test_a_version_is_reached_through_its_collection_only() -> None:
    team = Grants(("team-a-docs",))
    assert team.reaches("team-a-docs__v2")
    assert not Grants(("team-b-docs",)).reaches("team-a-docs__v2")
    # A pattern naming versions reaches no version of a collection it does not name.
    assert not Grants(("*__v2",)).reaches("team-b-docs__v2")


@pytest.mark.parametrize("variant", ["Team-B-docs", "TEAM-B-DOCS", "team-b-docs ", "team\u2010b-docs", "ｔｅａｍ-b-docs", "team-b-doc"])
def test_no_case_or_unicode_variant_of_a_name_is_reached(variant: str) -> None:
    assert not Grants(("team-a-*",)).reaches(variant)
    assert not Grants(("team-b-docs",)).reaches(variant)


@pytest.mark.parametrize("bad", ["team a", "../x", "team-[ab]", "tëam", "a,", "x/y"])
def test_a_pattern_outside_the_names_citadel_allows_is_refused(bad: str) -> None:
    if bad == "a,":
        assert parse_collections(bad) == ("a",)
        return
    with pytest.raises(ConfigurationError, match="collection grant"):
        parse_collections([bad])


def test_source_grants_narrow_the_service_sandbox(tmp_path: Path) -> None:
    service = tmp_path / "sources"
    (service / "team-a").mkdir(parents=True)
    (service / "team-b").mkdir()
    (service / "team-a" / "sneaky").symlink_to(service / "team-b")
    roots = SourceRoots.of([str(service), "s3://bucket/teams/"])
    team_a = Grants(sources=parse_sources([str(service / "team-a"), "s3://bucket/teams/a/", "s3://other/", str(tmp_path / "elsewhere")]))
    mine = team_a.sandbox(roots)
    assert mine.holds(service / "team-a" / "x.md")
    assert not mine.holds(service / "team-b" / "x.md")
    assert not mine.holds(service / "team-a" / "sneaky" / "x.md")  # the link resolves into team B's folder
    assert not mine.holds(tmp_path / "elsewhere")  # granted, but outside the service's roots
    assert [location.uri for location in mine.buckets] == ["s3://bucket/teams/a/"]
    assert Grants().sandbox(roots).folders == () and Grants(everything=True).sandbox(roots) == roots
    with pytest.raises(ConfigurationError, match="absolute folder"):
        parse_sources(["relative/path"])


def test_every_source_is_all_the_service_allows_and_no_more(tmp_path: Path) -> None:
    roots = SourceRoots.of([str(tmp_path)])
    assert Grants(sources=parse_sources("*")).sandbox(roots) == roots
    assert Grants(sources=parse_sources("*")).sandbox(SourceRoots(())).folders == ()
