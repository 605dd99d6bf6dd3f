"""Embedding for the API: the indexing path's cache and backends, with micro-batching in front of
each model's embedder and per-minute usage kept for the metrics routes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from api.batching import ItemFailed, MicroBatcher
from api.errors import ApiError
from citadel.apisettings import ApiSettings
from citadel.embedders import (
    Embedder,
    EmbeddingCache,
    LRUCache,
    build_embedder,
    cache_key,
    decode_vector,
    encode_vector,
    resolve_dimensions,
)
from citadel.errors import ConfigurationError
from citadel.resources import Resources


@dataclass
class Usage:
    """One minute's embedding requests as this process served them."""

    requests: int = 0
    texts: int = 0
    cached: int = 0
    computed: int = 0
    errors: int = 0
    seconds: float = 0.0

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class UsageWindow:
    """Per-minute usage of the last day: what the metrics and chart routes report, as measured."""

    def __init__(self, keep_s: int = 86_400) -> None:
        self.keep_s = keep_s
        self.minutes: dict[int, Usage] = {}

    def record(self, usage: Usage, now: float | None = None) -> None:
        minute = int((now or time.time()) // 60) * 60
        self.minutes.setdefault(minute, Usage()).add(usage)
        oldest = minute - self.keep_s
        for key in [k for k in self.minutes if k < oldest]:
            del self.minutes[key]

    def since(self, start: float) -> list[tuple[int, Usage]]:
        return sorted((minute, usage) for minute, usage in self.minutes.items() if minute >= start - 59)

    def total(self, start: float) -> Usage:
        total = Usage()
        for _, usage in self.since(start):
            total.add(usage)
        return total


@dataclass
class Embedded:
    vectors: np.ndarray
    model: str
    cached: int


class EmbeddingService:
    """The served models, each with its embedder and micro-batcher, over one shared cache."""

    def __init__(self, resources: Resources, api: ApiSettings) -> None:
        self.resources = resources
        self.api = api
        self.cache: EmbeddingCache = resources.cache
        # Vectors never change for a model and text, so the most requested ones are also kept in
        # this process: a hot text costs no Redis round trip (on the embedded defaults the shared
        # cache is already in-process).
        self.hot: LRUCache | None = LRUCache(max_items=api.api_hot_cache_items, name="hot") if resources.settings.redis_url else None
        self.default_model = resources.embedder.model
        self._embedders: dict[str, Embedder] = {self.default_model: resources.embedder}
        self._owned: list[Embedder] = []
        for model in api.api_models:
            if model in self._embedders:
                continue
            try:
                resolve_dimensions(model, None)
            except ValueError as exc:
                raise ConfigurationError(f"CITADEL_API_MODELS: {exc}") from None
            embedder = build_embedder(resources.settings.model_copy(update={"embedding_model": model, "embedding_dimensions": None}))
            self._embedders[embedder.model] = embedder
            self._owned.append(embedder)
        self.batchers = {model: self._batcher(embedder) for model, embedder in self._embedders.items()}
        self.usage = UsageWindow()

    def _slots(self, embedder: Embedder) -> int:
        settings = self.resources.settings
        if settings.embedder == "ollama":
            return len(settings.ollama_urls)
        if settings.embedder == "openai":
            return settings.embed_concurrency or 4
        return 1

    def _batcher(self, embedder: Embedder) -> MicroBatcher:
        async def embed_and_cache(texts: list[str]) -> np.ndarray:
            vectors = await embedder.embed(texts)
            items = [(cache_key(embedder.model, t), encode_vector(v)) for t, v in zip(texts, vectors, strict=True)]
            await self.cache.set_many(items)
            if self.hot is not None:
                await self.hot.set_many(items)
            return vectors

        return MicroBatcher(
            embed_and_cache, slots=self._slots(embedder), max_texts=self.api.api_batch_max_texts, wait_s=self.api.api_batch_wait_ms / 1000
        )

    @property
    def models(self) -> list[str]:
        return sorted(self._embedders)

    def embedder(self, model: str | None) -> Embedder:
        if model is None:
            return self._embedders[self.default_model]
        found = self._embedders.get(model) or self._embedders.get(model.removesuffix(":latest"))
        if found is None:
            raise ApiError(
                400, f"model {model!r} is not served here; served models: {', '.join(self.models)}",
                code="unknown_model", details={"models": self.models},
            )
        return found

    async def embed(self, texts: Sequence[str], model: str | None, *, use_cache: bool = True) -> Embedded:
        """Vectors for ``texts``: cached ones read in one batch, the rest through the micro-batcher."""
        embedder = self.embedder(model)
        started = time.perf_counter()
        usage = Usage(requests=1, texts=len(texts))
        try:
            vectors = np.zeros((len(texts), embedder.dimensions), dtype=np.float32)
            missing: dict[str, list[int]] = {}
            cached = [None] * len(texts) if not use_cache else await self._cached(embedder.model, texts)
            for row, (text, value) in enumerate(zip(texts, cached, strict=True)):
                if value is not None:
                    try:
                        vectors[row] = decode_vector(value, embedder.dimensions)
                        usage.cached += 1
                        continue
                    except ValueError:
                        pass
                missing.setdefault(text, []).append(row)
            if missing:
                computed = await self._computed(embedder.model, missing)
                for rows, vector in zip(missing.values(), computed, strict=True):
                    vectors[rows] = vector
                usage.computed = len(missing)
            return Embedded(vectors, embedder.model, usage.cached)
        except Exception:
            usage.errors = 1
            raise
        finally:
            usage.seconds = time.perf_counter() - started
            self.usage.record(usage)

    async def _computed(self, model: str, missing: dict[str, list[int]]) -> np.ndarray:
        """Vectors of the texts in ``missing`` (each with its rows in the request) through the model's
        micro-batcher; a text that fails on its own is the caller's 422, naming its place."""
        texts = list(missing)
        try:
            return await self.batchers[model].embed(texts)
        except ItemFailed as exc:
            rows = missing[texts[exc.index]]
            raise ApiError(
                422, f"text {rows[0]} could not be embedded ({type(exc.cause).__name__}); the backend failed on it alone: "
                "check that it is ordinary text, then send it again changed or leave it out",
                code="unembeddable_text", details={"indexes": rows[:100]},
            ) from exc.cause

    async def _cached(self, model: str, texts: Sequence[str]) -> list[bytes | None]:
        """What the hot tier holds, then what the shared cache holds of the rest (kept hot after)."""
        keys = [cache_key(model, t) for t in texts]
        if self.hot is None:
            return await self.cache.get_many(keys)
        found = await self.hot.get_many(keys)
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            shared = await self.cache.get_many([keys[i] for i in missing])
            await self.hot.set_many([(keys[i], value) for i, value in zip(missing, shared, strict=True) if value is not None])
            for i, value in zip(missing, shared, strict=True):
                found[i] = value
        return found

    async def aclose(self) -> None:
        for batcher in self.batchers.values():
            await batcher.aclose()
        for embedder in self._owned:
            await embedder.aclose()
