"""Blue-green switches and rollbacks in the audit trail: who made a version live, which one it
replaced, a version its check refused, and a switch with the check skipped."""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path

import pytest

from citadel.indexing import bluegreen, index_source
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.store import close_local_clients
from citadel.testing.corpus import write_corpus
from tests.cli.test_errors import citadel, one_line

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)


async def _two_versions(corpus: Path) -> None:
    """kb__v1 live (switched by no one in particular), kb__v2 built but short of three points."""
    resources = Resources(Settings())
    try:
        for _ in range(2):
            await index_source(resources, str(corpus), await bluegreen.next_version(resources, "kb"), full=True)
        await bluegreen.switch(resources, "kb", "kb__v1")
        lost = sorted(await resources.store.point_ids("kb__v2"))[:3]
        await resources.store.delete("kb__v2", lost)
    finally:
        await resources.aclose()
    close_local_clients()


def test_switches_and_rollbacks_name_who_asked(data_dir: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs", 4, seed=5)
    asyncio.run(_two_versions(tmp_path / "docs"))
    env = {"CITADEL_DATA_DIR": str(data_dir)}

    refused = citadel("collection", "switch", "kb", "kb__v2", env=env)
    assert refused.returncode == 1 and "failed its check" in one_line(refused)
    forced = citadel("collection", "switch", "kb", "kb__v2", "--force", env=env)
    assert forced.returncode == 0 and forced.stdout.startswith("kb now reads kb__v2 (was kb__v1)"), forced.stderr
    back = citadel("collection", "rollback", "kb", "--json", env=env)
    assert back.returncode == 0 and json.loads(back.stdout)["live"] == "kb__v1", back.stderr

    trail = json.loads(citadel("audit", "--json", env=env).stdout)
    me = f"cli:{getpass.getuser()}"
    assert [(line["actor"], line["action"], line["target"], line["outcome"]) for line in trail] == [
        (bluegreen.SYSTEM_ACTOR, "collection.switched", "collection:kb", "ok"),
        (me, "collection.switched", "collection:kb", "refused"),
        (me, "collection.switched", "collection:kb", "ok"),
        (me, "collection.rolled_back", "collection:kb", "ok"),
    ]
    first, failed, skipped, rolled = (line["detail"] for line in trail)
    assert first.startswith("nothing -> kb__v1; ") and "check skipped" not in first
    assert "failed its check" in failed and "still reads 'kb__v1'" in failed
    assert skipped.startswith("kb__v1 -> kb__v2; ") and skipped.endswith("; check skipped")
    assert rolled.startswith("kb__v2 -> kb__v1; ") and "check skipped" not in rolled
    text = citadel("audit", env=env).stdout
    assert "collection.rolled_back  collection:kb  ok" in text and all(len(line) <= 80 for line in text.splitlines())


def test_an_audit_line_fits_80_columns_and_never_drives_the_terminal() -> None:
    import datetime as dt

    from citadel.models import AuditEntry
    from cli.audit import render

    entry = AuditEntry(
        id=1, at=dt.datetime(2026, 12, 7, 9, 14, 2, tzinfo=dt.UTC), actor="jwt:\x1b]0;owned\x07mallory", address="10.0.4.7",
        action="search", target="collection:\u202ereversed", outcome="refused", detail="outside the key's grants " * 8,
    )
    lines = render(entry, 80)
    assert lines[0].startswith("2026-12-07 09:14:02  jwt:\\x1b]0;owned\\x07mallory  10.0.4.7  search")
    assert "collection:\\u202ereversed" in " ".join(lines)
    assert all(len(line) <= 80 and line.isprintable() for line in lines) and lines[-1].startswith("    ")
