"""Resources: backends built on first use; the vector store opened off the event loop when a run will write."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from citadel.errors import ConfigurationError
from citadel.resources import Resources
from citadel.settings import Settings
from citadel.store import close_local_clients


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


async def test_the_store_opens_in_a_worker_thread_while_the_loop_goes_on(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """An embedded store loads for seconds; the run keeps planning and embedding meanwhile."""
    from citadel.store import vectorstore

    resources = Resources(settings)
    opened_in: list[str] = []
    release = threading.Event()
    connect = vectorstore.VectorStore.connect

    def slow_connect(**kwargs: object) -> vectorstore.VectorStore:
        opened_in.append(threading.current_thread().name)
        release.wait(10)  # the open holds here until the loop has shown it is free
        return connect(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vectorstore.VectorStore, "connect", staticmethod(slow_connect))
    try:
        resources.open_store_in_background()
        resources.open_store_in_background()  # once only
        await asyncio.sleep(0.05)  # the loop runs while the store is opening
        assert not resources.store_opened
        release.set()
        store = await resources.open_store()
        assert store is resources.store is await resources.open_store()
        assert opened_in and opened_in[0] != threading.main_thread().name and len(opened_in) == 1
    finally:
        release.set()
        await resources.aclose()
        close_local_clients()


async def test_a_failed_background_open_is_raised_where_the_store_is_needed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store held elsewhere fails the step that writes, with the message a direct open gives."""
    from citadel.store import vectorstore

    resources = Resources(settings)

    def held(**kwargs: object) -> vectorstore.VectorStore:
        raise ConfigurationError("the vector store is in use by another process")

    monkeypatch.setattr(vectorstore.VectorStore, "connect", staticmethod(held))
    resources.open_store_in_background()
    with pytest.raises(ConfigurationError, match="in use by another process"):
        await resources.open_store()
    await resources.aclose()  # waits for the open, swallows what the step already raised


async def test_closing_waits_for_an_open_under_way_and_closes_what_it_opened(settings: Settings) -> None:
    resources = Resources(settings)
    resources.open_store_in_background()
    await resources.aclose()
    assert not resources.store_opened
    # The embedded store's folder is free for the next client in this process.
    close_local_clients()
    again = Resources(settings)
    assert (await again.open_store()).client is not None
    await again.aclose()
    close_local_clients()
