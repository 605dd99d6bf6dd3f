"""What a search of the store finds: points with their scores and payloads, and the mode that ranked them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from citadel.models import SearchHit
from citadel.settings import SearchMode


class Searched(list["Hit"]):
    """A search's hits, best first, and the mode that found them (a collection without lexical
    vectors is searched dense whatever the mode asked)."""

    def __init__(self, hits: Sequence[Hit], mode: SearchMode) -> None:
        super().__init__(hits)
        self.mode: SearchMode = mode


@dataclass(frozen=True)
class Hit:
    """One point found by a search, as the store returned it."""

    id: str
    score: float
    payload: dict[str, Any]

    def to_result(self) -> SearchHit:
        """The public search hit: Citadel's payload fields lifted, the rest kept as ``payload``."""
        payload = dict(self.payload)
        metadata = payload.get("metadata")
        where = metadata if isinstance(metadata, dict) else {}
        return SearchHit(
            score=self.score,
            id=self.id,
            document_id=payload.pop("document_id", None),
            chunk_index=payload.pop("chunk_index", None),
            text=payload.pop("text", None),
            source=payload.pop("source", None),
            title=_text_or_none(where.get("title")),
            page=where.get("page") if isinstance(where.get("page"), int) else None,
            section=_text_or_none(where.get("section")),
            uri=_text_or_none(where.get("uri") or where.get("path")),
            payload=payload,
        )

    def as_dict(self) -> dict[str, Any]:
        """:meth:`to_result` as JSON."""
        return self.to_result().to_json()


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
