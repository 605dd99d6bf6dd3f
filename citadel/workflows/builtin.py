"""Built-in step types on the core alone: chunk, embedding, search, index, and the ``flow`` stub.

Steps that need backends use ``ctx.services`` when it is a :class:`citadel.resources.Resources`
and otherwise build one from ``Settings()`` and close it afterwards. Heavy backends are imported
only when a step runs, so loading and validating workflows stays cheap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citadel.documents import chunk_text
from citadel.models import RunSummary
from citadel.settings import EmbedderConfig, SearchMode, Settings
from citadel.workflows.errors import OrchestrationRequired
from citadel.workflows.steps import StepContext, StepRegistry, default_registry

if TYPE_CHECKING:
    from citadel.resources import Resources

__all__ = [
    "ChunkParams",
    "EmbeddingParams",
    "FlowParams",
    "IndexParams",
    "SearchParams",
    "register_builtins",
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_of_text_or_texts(model: Any) -> Any:
    if (model.text is None) == (model.texts is None):
        raise ValueError("give exactly one of 'text' (one string) or 'texts' (a list of strings)")
    return model


class ChunkParams(_Params):
    """Split ``text`` or each of ``texts``; sizes default to CITADEL_CHUNK_SIZE / CITADEL_CHUNK_OVERLAP."""

    text: str | None = None
    texts: list[str] | None = None
    chunk_size: int | None = Field(None, gt=0)
    chunk_overlap: int | None = Field(None, ge=0)

    _check_text = model_validator(mode="after")(_one_of_text_or_texts)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkParams:
        if self.chunk_size is not None and self.chunk_overlap is not None and self.chunk_overlap >= self.chunk_size:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})")
        return self


class EmbeddingParams(_Params):
    """Embed ``text`` or ``texts`` through the cache; ``model``/``embedder`` override the settings."""

    text: str | None = None
    texts: list[str] | None = None
    model: str | None = None
    embedder: EmbedderConfig | None = None

    _check_text = model_validator(mode="after")(_one_of_text_or_texts)

    @model_validator(mode="after")
    def _one_model(self) -> EmbeddingParams:
        if self.model and self.embedder and self.embedder.model and self.embedder.model != self.model:
            raise ValueError(f"'model' ({self.model}) and 'embedder.model' ({self.embedder.model}) disagree; give one")
        return self

    def embedder_config(self) -> EmbedderConfig | None:
        if not self.model:
            return self.embedder
        base = self.embedder.model_dump() if self.embedder else {}
        return EmbedderConfig(**{**base, "model": self.model})


class SearchParams(_Params):
    """Nearest chunks of ``collection`` (default CITADEL_COLLECTION) to ``query``."""

    query: str = Field(min_length=1)
    collection: str | None = None
    limit: int = Field(10, gt=0, le=1000)
    score_threshold: float | None = None
    filters: dict[str, Any] | None = None
    by_document: bool = False  # each document's nearest chunk only
    mode: SearchMode | None = Field(None, description="dense, sparse or hybrid; default: the search_mode setting.")
    embedder: EmbedderConfig | None = None


class IndexParams(_Params):
    """Index a directory, glob or file path, or inline ``{"id", "text", "metadata"}`` records."""

    source: str | list[dict[str, Any]]
    collection: str | None = None
    full: bool = False
    prune: bool | None = None
    source_name: str = Field("inline", min_length=1, description="Source key of inline records.")
    embedder: EmbedderConfig | None = None
    blue_green: bool = Field(False, description="Build a new version of the collection from the source, then switch its alias.")

    @field_validator("source")
    @classmethod
    def _non_empty_path(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, str) and not value.strip():
            raise ValueError("source must be a path, a glob or a list of documents, not an empty string")
        return value


class FlowParams(_Params):
    """Run the Prefect deployment ``flow-name/deployment-name`` with ``parameters``."""

    deployment: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(None, gt=0)

    @field_validator("deployment")
    @classmethod
    def _flow_slash_deployment(cls, value: str) -> str:
        parts = value.split("/")
        if len(parts) != 2 or not all(part.strip() for part in parts):
            raise ValueError(f"deployment must look like 'flow-name/deployment-name', got {value!r}")
        return value


# backends ------------------------------------------------------------------------------------


def _settings_of(ctx: StepContext) -> Settings:
    settings = getattr(ctx.services, "settings", None)
    return settings if isinstance(settings, Settings) else Settings()


@asynccontextmanager
async def _embedding_backend(ctx: StepContext, embedder: EmbedderConfig | None) -> AsyncIterator[Resources]:
    """Backends for a step that embeds: the caller's Resources when they fit the requested
    embedder, else a private one closed after; held under the caller's embedding guard (a slot of
    the backend's concurrency limit) for the whole step."""
    from citadel.resources import Resources

    async with AsyncExitStack() as stack:
        services = ctx.services
        if isinstance(services, Resources) and (embedder is None or embedder.apply(services.settings) == services.settings):
            resources = services
        else:
            base = services.settings if isinstance(services, Resources) else Settings()
            resources = Resources(embedder.apply(base) if embedder else base)
            stack.push_async_callback(resources.aclose)
        if ctx.embedding_guard is not None:
            await stack.enter_async_context(ctx.embedding_guard(resources.settings))
        yield resources


# runners -------------------------------------------------------------------------------------


async def run_chunk(params: ChunkParams, ctx: StepContext) -> dict[str, Any]:
    """Split text into overlapping chunks at paragraph, sentence or word boundaries.

    With ``texts`` every chunk also carries ``text_index``, the position of the text it came from.
    """
    settings = _settings_of(ctx)
    size = params.chunk_size or settings.chunk_size
    overlap = params.chunk_overlap
    if overlap is None:  # the configured overlap, unless it does not fit an explicitly small size
        overlap = settings.chunk_overlap if settings.chunk_overlap < size else size // 10
    texts = [params.text] if params.text is not None else list(params.texts or [])
    chunks: list[dict[str, Any]] = []
    for text_index, text in enumerate(texts):
        for piece in chunk_text(text, size, overlap):
            item = {"index": piece.index, "text": piece.text, "start": piece.start, "end": piece.end, "hash": piece.hash}
            if params.texts is not None:
                item["text_index"] = text_index
            chunks.append(item)
    return {"chunks": chunks, "texts": [chunk["text"] for chunk in chunks]}


async def run_embedding(params: EmbeddingParams, ctx: StepContext) -> dict[str, Any]:
    """Embed texts through the embedding cache."""
    texts = [params.text] if params.text is not None else list(params.texts or [])
    async with _embedding_backend(ctx, params.embedder_config()) as resources:
        result = await resources.cached_embedder.embed(texts)
        return result.as_dict(resources.embedder.model, resources.embedder.dimensions)


async def run_search(params: SearchParams, ctx: StepContext) -> dict[str, Any]:
    """Embed a query and return the nearest chunks of a collection."""
    from citadel.search import search_with

    async with _embedding_backend(ctx, params.embedder) as resources:
        collection = params.collection or resources.settings.collection
        found = await search_with(
            resources, params.query, collection,
            limit=params.limit, score_threshold=params.score_threshold, filters=params.filters, by_document=params.by_document,
            mode=params.mode,
        )
        return {
            "collection": collection, "model": resources.embedder.model, "mode": found.mode, "hits": [hit.to_json() for hit in found.hits],
        }


async def run_index(params: IndexParams, ctx: StepContext) -> dict[str, Any]:
    """Index documents incrementally: embed only what changed, prune what is gone."""
    from citadel.indexing import build_and_switch, index_source

    async with _embedding_backend(ctx, params.embedder) as resources:
        collection = params.collection or resources.settings.collection
        if params.blue_green:
            summary = await build_and_switch(resources, params.source, collection, params.prune, source_name=params.source_name)
        else:
            summary = await index_source(
                resources, params.source, collection, params.full, params.prune, source_name=params.source_name
            )
        return summary.to_json()


async def run_flow(params: FlowParams, ctx: StepContext) -> Any:
    """Run a Prefect deployment (needs the orchestration layer)."""
    raise OrchestrationRequired(
        f"step {ctx.step_id!r} runs the Prefect deployment {params.deployment!r}: the 'flow' step type "
        "needs the orchestration layer, which registers its runner; run this workflow through it"
    )


# What each built-in step returns, so validation can check ${steps.<id>.output.<key>} references.
CHUNK_OUTPUTS = ("chunks", "texts")
EMBEDDING_OUTPUTS = ("model", "dimensions", "vectors", "cache_hits", "embedded")
SEARCH_OUTPUTS = ("collection", "model", "hits")
INDEX_OUTPUTS = tuple(RunSummary.model_fields)
FLOW_OUTPUTS = ("flow_run_id", "state", "deployment")

# Chunking and embedding are deterministic; a search's cached hits may be as old as the cache's
# expiration; index and flow change state, so they may not be cached.
BUILTINS: tuple[tuple[str, Any, type[BaseModel], str, tuple[str, ...], bool], ...] = (
    ("chunk", run_chunk, ChunkParams, "Split text into overlapping chunks.", CHUNK_OUTPUTS, True),
    ("embedding", run_embedding, EmbeddingParams, "Embed texts through the embedding cache.", EMBEDDING_OUTPUTS, True),
    ("search", run_search, SearchParams, "Nearest chunks of a collection to a query.", SEARCH_OUTPUTS, True),
    ("index", run_index, IndexParams, "Index documents into a collection, incrementally.", INDEX_OUTPUTS, False),
    ("flow", run_flow, FlowParams, "Run a Prefect deployment (provided by the orchestration layer).", FLOW_OUTPUTS, False),
)


def register_builtins(registry: StepRegistry, *, replace: bool = False) -> None:
    """Register the built-in step types into ``registry``; existing names stay unless ``replace``."""
    for name, run, params, description, outputs, cacheable in BUILTINS:
        if name in registry and not replace:
            continue
        registry.register(
            name, run, params=params, description=description, replace=replace, outputs=outputs, cacheable=cacheable
        )


register_builtins(default_registry)
