"""What a user or a program reads from Citadel: the typed results that the CLI's ``--json``, the
flows' results and the HTTP API all return.

Field names are a public contract: fields are added, never renamed. Every counter of an
indexing run is declared once, in :class:`RunCounts`; the registry's columns, the sharded total
and the CLI's tables derive from it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, model_validator

from citadel.settings import SearchMode


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back without their zone; the registry writes UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


UTCDateTime = Annotated[dt.datetime, AfterValidator(as_utc)]


class Result(BaseModel):
    """Base of the public results: unknown fields are refused, so a typo cannot pass unnoticed."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _computed_fields_are_not_input(cls, data: Any) -> Any:
        """A result's JSON carries its computed fields (``drift``); reading it back ignores them."""
        if isinstance(data, dict) and cls.model_computed_fields:
            return {key: value for key, value in data.items() if key not in cls.model_computed_fields}
        return data

    def to_json(self) -> dict[str, Any]:
        """The JSON shape (datetimes as ISO text), for ``--json``, flow results and the API."""
        return self.model_dump(mode="json")

    def __getitem__(self, field: str) -> Any:
        """``result["added"]`` reads like the JSON it becomes (scripts written against ``--json``)."""
        if field not in type(self).model_fields and field not in type(self).model_computed_fields:
            raise KeyError(field)
        return getattr(self, field)

    def get(self, field: str, default: Any = None) -> Any:
        """``result.get("added", 0)``, as on the JSON it becomes."""
        try:
            return self[field]
        except KeyError:
            return default


class EmbeddedCounts(Protocol):
    """What embedding one batch did (an indexing batch answers it)."""

    @property
    def chunks_embedded(self) -> int: ...
    @property
    def cache_hits(self) -> int: ...
    @property
    def chunks_reused(self) -> int: ...
    @property
    def failed(self) -> int: ...


class WrittenCounts(Protocol):
    """What writing one batch did (an indexing batch answers it)."""

    @property
    def added(self) -> int: ...
    @property
    def updated(self) -> int: ...
    @property
    def repaired(self) -> int: ...
    @property
    def chunks_written(self) -> int: ...
    @property
    def points_deleted(self) -> int: ...


class RunCounts(Result):
    """What an indexing run did, in documents and chunks."""

    # A title is the counter's column in `citadel status` (documents; the chunk counters have none).
    added: int = Field(0, title="add", description="Documents new to the collection.")
    updated: int = Field(0, title="upd", description="Documents whose text, metadata or chunk settings changed.")
    unchanged: int = Field(0, title="same", description="Documents skipped: the registry has them as they are.")
    deleted: int = Field(0, title="del", description="Documents gone from their source, removed from the store.")
    failed: int = Field(0, title="fail", description="Documents that went to the dead letters this run.")
    chunks_embedded: int = Field(0, description="Chunks the embedder computed.")
    chunks_written: int = Field(0, description="Points written to the vector store.")
    chunks_reused: int = Field(
        0, description="Chunks not embedded because their stored vector served: left in place (unchanged) or copied (moved)."
    )
    cache_hits: int = Field(0, description="Chunks whose vector came from the embedding cache.")
    repaired: int = Field(0, title="fix", description="Documents whose points the store had lost, written again.")
    points_deleted: int = Field(
        0, description="Points deleted from the vector store: chunks a changed document no longer has, and every point of a deleted one."
    )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The counters, in order: the registry's columns and the CLI's table follow them."""
        return tuple(RunCounts.model_fields)

    @classmethod
    def columns(cls) -> list[tuple[str, str]]:
        """(counter, column title) of the document counters, for tables."""
        return [(name, info.title) for name, info in RunCounts.model_fields.items() if info.title]

    def counts(self) -> RunCounts:
        """Only the counters (of a summary or a recorded run)."""
        return RunCounts(**{name: getattr(self, name) for name in RunCounts.names()})

    def __add__(self, other: RunCounts) -> RunCounts:
        """Counters added up: the total of a sharded run."""
        return RunCounts(**{name: getattr(self, name) + getattr(other, name) for name in RunCounts.names()})

    def add_embedded(self, batch: EmbeddedCounts) -> None:
        """Count what embedding a batch did."""
        self.chunks_embedded += batch.chunks_embedded
        self.cache_hits += batch.cache_hits
        self.chunks_reused += batch.chunks_reused
        self.failed += batch.failed

    def add_written(self, written: WrittenCounts) -> None:
        """Count what writing a batch did."""
        self.added += written.added
        self.updated += written.updated
        self.repaired += written.repaired
        self.chunks_written += written.chunks_written
        self.points_deleted += written.points_deleted


class StoreCheck(Result):
    """What a check of one collection's vector store against the registry found, and did."""

    collection: str
    expected: int = Field(description="Points the store must hold: indexed chunks of indexed documents.")
    registered: int = Field(description="Points the store may hold at most: every point id the registry knows.")
    points: int | None = Field(description="Points the store holds; None when it lacks the collection.")
    sampled: int = 0
    checked_by: str = Field("", description="file, rest or client: how the store was read.")
    full: bool = Field(False, description="Whether every point id was compared.")
    missing: int = Field(0, description="Registry points the store lacks.")
    stray: int = Field(0, description="Store points the registry does not know.")
    documents_to_repair: int = Field(0, description="Documents marked for repair; their points are written again.")
    sources_to_repair: list[str] = Field(default_factory=list)
    seconds: float = Field(0.0, description="What the check cost.")

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented way; mypy does not know decorated properties
    @property
    def drift(self) -> bool:
        """Whether the store and the registry disagree."""
        return bool(self.missing or self.stray or (self.points is None and self.expected))


class SwitchReport(Result):
    """A blue-green switch: which version of a collection is live now, which was, and its check."""

    collection: str = Field(description="The alias that searches read.")
    live: str = Field(description="The version the alias stands for now.")
    previous: str | None = Field(None, description="The version it stood for before (kept for rollback), if any.")
    replaced_plain: bool = Field(False, description="A plain collection of that name was replaced (first switch).")
    points: int
    chunks: int = Field(description="The version's chunks in the registry; the check needs them equal to its points.")
    sample_found: bool = Field(description="A search for the text of one of its chunks found that chunk first.")


class CollectionVersion(Result):
    """One version of a blue-green collection."""

    name: str
    number: int
    live: bool
    points: int


class CollectionVersions(Result):
    """The versions of a blue-green collection, oldest first."""

    collection: str
    live: str | None = Field(description="The version the alias stands for; None when it is no alias.")
    plain: bool = Field(description="A plain collection (no versions) holds the name.")
    versions: list[CollectionVersion]


class RunSummary(RunCounts):
    """The summary of one indexing run: its counts, what it touched, how long it took, and what
    the user should know."""

    documents_seen: int = 0
    duration_s: float = 0.0
    collection: str
    model: str
    source: str
    vector_store_opened: bool = False
    run_id: str
    flow_run_id: str | None = None
    store: StoreCheck | None = None
    switch: SwitchReport | None = Field(None, description="A blue-green build: the switch to the version this run built.")
    warnings: list[str] = Field(default_factory=list)


class ShardedRunSummary(RunCounts):
    """An ``index-sharded`` run: the counters of its shards added up, and the shards' flow runs."""

    collection: str
    source: str
    shards: int
    files: int
    flow_run_ids: list[str]
    failed_shards: list[str] = Field(default_factory=list)
    duration_s: float = 0.0


class SearchHit(Result):
    """One chunk found by a search, nearest first."""

    score: float
    id: str = Field(description="The point id.")
    document_id: str | None = None
    chunk_index: int | None = None
    text: str | None = None
    source: str | None = None
    title: str | None = Field(None, description="The document's title, where its format has one (PDF, HTML, Office, EPUB).")
    page: int | None = Field(None, description="The page (a PDF page, a slide, an EPUB chapter) the chunk starts on.")
    section: str | None = Field(None, description="The headings above the chunk, outermost first, joined by ' > '.")
    uri: str | None = Field(None, description="Where to open the document: its path, or its object's s3:// URI.")
    payload: dict[str, Any] = Field(default_factory=dict, description="The rest of the point's payload (metadata, model, ...).")


class SearchResults(Result):
    """A search's hits, best first, and the mode that ranked them."""

    mode: SearchMode = Field(
        description="dense, sparse or hybrid: the mode asked for, or dense for a collection indexed before lexical vectors."
    )
    hits: list[SearchHit]
    reranked: bool = Field(False, description="Whether the reranker (CITADEL_RERANK_URL) ordered the hits.")
    warnings: list[str] = Field(default_factory=list, description="What the search did without: a reranker that failed, say.")


class DeadLetterRecord(Result):
    """A document that could not be indexed, and why; retried on every run until it indexes."""

    collection: str
    document_id: str
    source: str
    stage: str = Field(description="load, embed or write: where it failed.")
    error: str
    attempts: int
    first_failed_at: UTCDateTime
    last_failed_at: UTCDateTime


class IndexRunRecord(RunCounts):
    """An indexing run as the registry keeps it."""

    id: str
    collection: str
    source: str
    flow_run_id: str | None = None
    status: str = Field(description="running, completed, failed, cancelled or crashed.")
    started_at: UTCDateTime
    finished_at: UTCDateTime | None = None
    duration_s: float | None = None
    lock_key: str | None = None
    host: str | None = None
    pid: int | None = None
    heartbeat_at: UTCDateTime | None = None


class CollectionStatus(Result):
    """One collection: its model, what the registry holds, what the store holds, and whether they agree."""

    collection: str
    model: str
    dimensions: int
    documents: int
    chunks: int
    vectors: int = 0
    dead_letters: int = 0
    awaiting_repair: int = Field(0, description="Documents whose lost points wait for their source's next run.")
    drift: bool = False
    missing: int = 0
    stray: int = 0
    aliases: list[str] = Field(default_factory=list, description="Blue-green aliases that read this collection (it is their live version).")


class StatusReport(Result):
    """``citadel status``: the collections, the last runs, the newest dead letters."""

    collections: list[CollectionStatus]
    runs: list[IndexRunRecord]
    dead_letters: list[DeadLetterRecord]
    crashed_runs: list[IndexRunRecord] = Field(default_factory=list, description="Runs found crashed just now.")


class DoctorCheck(Result):
    """One check of ``citadel doctor``: a backend or a collection, and how to fix it when it fails."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class StepReport(Result):
    """One step of a workflow run."""

    state: str = Field(description="Completed, Failed, Skipped (upstream failed), Pending, Running, ...")
    start: str | None = None
    end: str | None = None
    duration_s: float | None = None
    error: str | None = None
    output: Any = None
    cached: bool = Field(False, description="Whether the output came from the step's cache.")


class WorkflowReport(Result):
    """A workflow run: its state and every step's."""

    flow_run_id: str
    name: str | None = None
    workflow_id: str | None = None
    state: str | None = None
    start: str | None = None
    end: str | None = None
    steps: dict[str, StepReport] = Field(default_factory=dict)


class VerifyReport(Result):
    """``citadel verify`` of one collection: the full check, what waits for repair, and with
    ``--repair`` what was indexed again and the check after."""

    check: StoreCheck
    awaiting_repair: dict[str, int] = Field(default_factory=dict, description="Documents awaiting repair, by source.")
    reindexed: list[RunSummary] = Field(default_factory=list)
    after: VerifyReport | None = None

    @property
    def healthy(self) -> bool:
        """Whether the store matches the registry, after the repair when there was one."""
        final = self.after or self
        return not final.check.drift and not final.awaiting_repair


class ApiKeyRecord(Result):
    """An API key of the HTTP service as listed: never the key itself, which is shown once."""

    key_id: str = Field(description="The key's public id: its first characters after ctd_.")
    name: str
    scopes: list[str]
    created_at: UTCDateTime
    last_used_at: UTCDateTime | None = None
    revoked_at: UTCDateTime | None = None
    collections: list[str] = Field(default_factory=list, description="Collection names or patterns it reaches (none: no collection).")
    sources: list[str] = Field(default_factory=list, description="Folders and s3:// prefixes its workflows may read, inside the service's.")
    rate_limits: str = Field("", description="Its own rate limits, within the service's (empty: the service's).")
    expires_at: UTCDateTime | None = Field(None, description="When it stops working (none: never).")
    replaced_by: str | None = Field(None, description="The key a rotation issued in its place.")


class ApiKeyCreated(ApiKeyRecord):
    """A new key with its secret value: shown this once, stored only as a hash."""

    key: str


class TokenCreated(Result):
    """A bearer token minted for an operator or a test."""

    token: str
    subject: str
    scopes: list[str]
    collections: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    expires_at: UTCDateTime


class AuditEntry(Result):
    """One line of the audit trail: who did or was refused what, when, from where. Never a secret."""

    id: int
    at: UTCDateTime
    actor: str = Field(description="key:<id>, jwt:<subject>, cli:<user>, or anonymous.")
    address: str = Field("", description="The caller's address (empty from the CLI).")
    action: str = Field(description="What was asked, e.g. key.created, workflow.submitted, collection.switched.")
    target: str = Field("", description="What it was asked of: a key id, a run id, a collection, a route.")
    outcome: str = Field(description="ok or refused.")
    detail: str = ""
