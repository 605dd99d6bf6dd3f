"""Blue-green collections: a new version is built while searches read the old one through the
alias, the switch is checked and atomic, and rollback and prune move between versions.

In embedded mode the build and the searches share one process (the store allows no other); over
the Qdrant REST test server the build is ``citadel index --blue-green`` in a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from citadel.errors import ConfigurationError, VersionCheckFailed
from citadel.indexing import bluegreen, build_and_switch, index_source
from citadel.ops import collect_status
from citadel.resources import Resources
from citadel.search import search_with
from citadel.settings import Settings
from citadel.testing.corpus import write_corpus
from citadel.workflows import StepContext, get_step_type
from tests.support.qdrant_server import QdrantTestServer

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
MARKER = "zebraquartz"
QUERY = f"{MARKER} lantern harbour"


def write_marked_corpus(root: Path, files: int, seed: int) -> None:
    """A corpus whose every file mentions the marker word: a search for it tells the versions apart."""
    for path in write_corpus(root, files, seed=seed):
        path.write_text(path.read_text() + f"\n\nThe {MARKER} lantern guards the harbour.\n")


class SearchLoop:
    """Searches ``collection`` again and again until stopped; keeps every outcome in order."""

    def __init__(self, resources: Resources, collection: str) -> None:
        self.resources = resources
        self.collection = collection
        self.outcomes: list[bool | BaseException] = []  # per search: did the top hit carry the marker
        self.empty = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                hits = (await search_with(self.resources, QUERY, self.collection, limit=3)).hits
            except Exception as exc:  # noqa: BLE001 - every failure is an outcome the test asserts on
                self.outcomes.append(exc)
            else:
                if not hits:
                    self.empty += 1
                self.outcomes.append(bool(hits) and MARKER in (hits[0].text or ""))
            await asyncio.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()

    def assert_clean_switch(self) -> None:
        """No error, no empty answer, old version's answers then the new one's, never back."""
        errors = [o for o in self.outcomes if isinstance(o, BaseException)]
        assert not errors, errors[:3]
        assert self.empty == 0
        assert len(self.outcomes) >= 5, "the loop should have searched throughout the build"
        first_new = self.outcomes.index(True) if True in self.outcomes else len(self.outcomes)
        assert first_new > 0, "the first searches ran before the switch and must read the old version"
        assert all(self.outcomes[first_new:]), "once switched, every search must read the new version"


async def test_build_switch_rollback_and_prune_in_embedded_mode(data_dir: Path, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    write_corpus(old, 12, seed=1)
    write_marked_corpus(new, 30, seed=2)
    settings = Settings()
    writer, reader = Resources(settings), Resources(settings)
    try:
        await index_source(writer, str(old), "kb")

        # The first blue-green build replaces the plain collection with an alias over kb__v1.
        first = await bluegreen.next_version(writer, "kb")
        assert first == "kb__v1"
        await index_source(writer, str(old), first, full=True)
        report = await bluegreen.switch(writer, "kb", first)
        assert (report.live, report.previous, report.replaced_plain, report.sample_found) == ("kb__v1", None, True, True)
        assert report.points == report.chunks > 0
        registry = await writer.registry()
        assert await registry.collection("kb") is None, "the replaced plain collection leaves the registry"

        # The second build runs while searches read kb: old answers, then new ones, nothing failed or empty.
        loop = SearchLoop(reader, "kb")
        searching = asyncio.create_task(loop.run())
        await asyncio.sleep(0.1)
        second = await bluegreen.next_version(writer, "kb")
        summary = await index_source(writer, str(new), second, full=True)
        assert summary.collection == "kb__v2" and summary.added == 30
        report = await bluegreen.switch(writer, "kb", second)
        await asyncio.sleep(0.1)
        loop.stop()
        await searching
        loop.assert_clean_switch()
        assert (report.live, report.previous) == ("kb__v2", "kb__v1")

        # An incremental run of kb writes into the live version; re-running it embeds nothing.
        again = await index_source(writer, str(new), "kb")
        assert (again.collection, again.unchanged, again.chunks_embedded) == ("kb__v2", 30, 0)

        listed = await bluegreen.versions(reader, "kb")
        assert [(v.name, v.live) for v in listed.versions] == [("kb__v1", False), ("kb__v2", True)]
        status = {c.collection: c.aliases for c in (await collect_status(settings)).collections}
        assert status == {"kb__v1": [], "kb__v2": ["kb"]}

        back = await bluegreen.rollback(writer, "kb")
        assert (back.live, back.previous) == ("kb__v1", "kb__v2")
        hits = (await search_with(reader, QUERY, "kb", limit=3)).hits
        assert hits and all(MARKER not in (hit.text or "") for hit in hits)
        with pytest.raises(ConfigurationError, match="nothing to roll back to"):
            await bluegreen.rollback(writer, "kb")

        # Pruning after a rollback deletes the abandoned newer version, store and registry alike.
        assert await bluegreen.prune(writer, "kb", keep=0) == ["kb__v2"]
        assert [v.name for v in (await bluegreen.versions(reader, "kb")).versions] == ["kb__v1"]
        assert await registry.collection("kb__v2") is None
    finally:
        await writer.aclose()
        await reader.aclose()


async def test_a_version_that_fails_its_check_is_not_switched_to(data_dir: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs", 6, seed=3)
    resources = Resources(Settings())
    try:
        for _ in range(2):
            version = await bluegreen.next_version(resources, "kb")
            await index_source(resources, str(tmp_path / "docs"), version, full=True)
        await bluegreen.switch(resources, "kb", "kb__v1")
        lost = sorted(await resources.store.point_ids("kb__v2"))[:3]
        await resources.store.delete("kb__v2", lost)

        refused = "failed its check .*holds 27 points but the registry has 30 chunks.*still reads 'kb__v1'"
        with pytest.raises(VersionCheckFailed, match=refused):
            await bluegreen.switch(resources, "kb", "kb__v2")
        assert (await bluegreen.versions(resources, "kb")).live == "kb__v1"
        forced = await bluegreen.switch(resources, "kb", "kb__v2", check=False)
        assert forced.live == "kb__v2" and forced.points == forced.chunks - 3

        with pytest.raises(ConfigurationError, match="not a version of 'kb'"):
            await bluegreen.switch(resources, "kb", "other__v1")
        with pytest.raises(ConfigurationError, match="does not exist"):
            await bluegreen.switch(resources, "kb", "kb__v9")
        await resources.store.point_alias("foreign", "kb__v1")
        with pytest.raises(ConfigurationError, match="not one of its versions"):
            await bluegreen.next_version(resources, "foreign")
        for operation in (bluegreen.prune, bluegreen.rollback):
            with pytest.raises(ConfigurationError, match="not one of its versions"):
                await operation(resources, "foreign")
    finally:
        await resources.aclose()


def test_version_names() -> None:
    assert bluegreen.version_name("kb", 3) == "kb__v3"
    assert bluegreen.version_number("kb", "kb__v12") == 12
    assert [bluegreen.version_number("kb", name) for name in ("kb", "kb__v0", "kb__v1x", "kbx__v1", "kb__v")] == [None] * 5


async def test_cli_build_in_another_process_while_searches_read_the_alias_over_a_server(
    data_dir: Path, tmp_path: Path, prefect_api_url: str
) -> None:
    """The production shape: a Qdrant server, `citadel index --blue-green` as its own process (a
    Prefect flow), searches from this process, and the CLI's collection commands after."""
    old, new = tmp_path / "old", tmp_path / "new"
    write_corpus(old, 10, seed=4)
    write_marked_corpus(new, 60, seed=5)
    with QdrantTestServer(tmp_path / "qdrant") as server:
        env = {**os.environ, "CITADEL_QDRANT_URL": server.url, "PREFECT_API_URL": prefect_api_url}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

        first = cli("index", str(old), "--collection", "kb", "--blue-green", "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["switch"]["live"] == "kb__v1"

        resources = Resources(Settings(qdrant_url=server.url))
        loop = SearchLoop(resources, "kb")
        try:
            searching = asyncio.create_task(loop.run())
            await asyncio.sleep(0.2)
            done = threading.Event()
            build: list[subprocess.CompletedProcess[str]] = []

            def run_build() -> None:
                build.append(cli("index", str(new), "--collection", "kb", "--blue-green", "--json"))
                done.set()

            threading.Thread(target=run_build, daemon=True).start()
            while not done.is_set():
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            loop.stop()
            await searching
        finally:
            await resources.aclose()
        assert build[0].returncode == 0, build[0].stderr
        summary = json.loads(build[0].stdout)
        assert summary["collection"] == "kb__v2" and summary["added"] == 60
        assert summary["switch"] == {
            "collection": "kb", "live": "kb__v2", "previous": "kb__v1", "replaced_plain": False,
            "points": summary["chunks_embedded"], "chunks": summary["chunks_embedded"], "sample_found": True,
        }
        loop.assert_clean_switch()

        listed = json.loads(cli("collection", "list", "kb", "--json").stdout)
        assert [(v["name"], v["live"]) for v in listed["versions"]] == [("kb__v1", False), ("kb__v2", True)]
        shown = cli("collection", "list", "kb").stdout
        assert "live  kb__v2" in shown and "kb__v1" in shown
        again = cli("collection", "switch", "kb", "kb__v2", "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["previous"] == "kb__v2", again.stderr
        rolled = cli("collection", "rollback", "kb")
        assert rolled.returncode == 0 and "kb now reads kb__v1 (was kb__v2)" in rolled.stdout, rolled.stderr
        searched = json.loads(cli("search", QUERY, "--collection", "kb", "--json").stdout)
        assert searched and all(MARKER not in hit["text"] for hit in searched)
        pruned = json.loads(cli("collection", "prune", "kb", "--keep", "0", "--json").stdout)
        assert pruned == {"collection": "kb", "deleted": ["kb__v2"]}
        missing = cli("collection", "rollback", "kb")
        assert missing.returncode == 2 and "nothing to roll back to" in missing.stderr and "Traceback" not in missing.stderr


async def test_workflow_index_step_builds_and_switches_and_its_search_step_reads_the_alias(data_dir: Path, tmp_path: Path) -> None:
    """The DAG ``index`` step with ``blue_green``; a build with a failed document is kept but not switched to."""
    docs = tmp_path / "docs"
    write_marked_corpus(docs, 5, seed=6)
    resources = Resources(Settings())
    index, search = get_step_type("index"), get_step_type("search")
    try:
        built = await index({"source": str(docs), "collection": "kb", "blue_green": True}, StepContext("t", "i", {}, resources))
        assert built["collection"] == "kb__v1" and built["switch"]["live"] == "kb__v1"
        found = await search({"query": QUERY, "collection": "kb", "limit": 2}, StepContext("t", "s", {}, resources))
        assert found["hits"] and MARKER in found["hits"][0]["text"]

        (docs / "broken.txt").write_bytes(b"\x00\x01binary")
        kept = await index({"source": str(docs), "collection": "kb", "blue_green": True}, StepContext("t", "i", {}, resources))
        assert kept["collection"] == "kb__v2" and kept["failed"] == 1 and kept["switch"] is None
        assert any("was not switched to kb__v2" in warning for warning in kept["warnings"])
        assert (await bluegreen.versions(resources, "kb")).live == "kb__v1"
    finally:
        await resources.aclose()


async def test_two_builds_at_once_take_turns_and_build_two_versions(data_dir: Path, tmp_path: Path) -> None:
    """The blue-green lock: without it both builds would pick kb__v1 and fill it together."""
    write_corpus(tmp_path / "a", 4, seed=7)
    write_corpus(tmp_path / "b", 4, seed=8)
    first, second = Resources(Settings()), Resources(Settings())
    try:
        built = await asyncio.gather(
            build_and_switch(first, str(tmp_path / "a"), "kb"),
            build_and_switch(second, str(tmp_path / "b"), "kb"),
        )
        assert sorted(summary.collection for summary in built) == ["kb__v1", "kb__v2"]
        assert all(summary.switch is not None and summary.added == 4 for summary in built)
        listed = await bluegreen.versions(first, "kb")
        assert [(v.name, v.live, v.points) for v in listed.versions] == [
            ("kb__v1", False, built[0].chunks_embedded if built[0].collection == "kb__v1" else built[1].chunks_embedded),
            ("kb__v2", True, built[0].chunks_embedded if built[0].collection == "kb__v2" else built[1].chunks_embedded),
        ]
    finally:
        await first.aclose()
        await second.aclose()
