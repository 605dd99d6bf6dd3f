"""Configuration from ``CITADEL_*`` environment variables and a ``.env`` file.

With no setting at all Citadel runs on embedded defaults: the WordLlama embedder (in-process, its
weights in its package), hybrid search, an in-process LRU cache, Qdrant's embedded mode and a SQLite registry under ``CITADEL_DATA_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from citadel.nesting import DEFAULT_MAX_DEPTH, MAX_DEPTH_CEILING

EmbedderKind = Literal["hashing", "wordllama", "ollama", "openai"]
IN_PROCESS_EMBEDDERS = ("hashing", "wordllama")  # run inside each process: no server, no shared limit
SearchMode = Literal["dense", "sparse", "hybrid"]

# A parser process holds about 250 MB of address space (the interpreter, PDFium, lxml, openpyxl and
# the other readers) before it reads a byte, so a smaller CITADEL_PARSE_MAX_MEMORY_MB parses nothing.
PARSE_MEMORY_FLOOR_MB = 512


def split_comma_list(value: object) -> object:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``, so lists can be given as one environment variable; other values pass."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def http_url(url: str) -> str:
    """An embedding server's URL without surrounding blanks or a trailing slash. One without an
    http:// or https:// scheme is a clear error, not a connection retried until it gives up."""
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        if "://" in url:
            raise ValueError(f"{url!r}: embedding server URLs start with http:// or https://")
        raise ValueError(
            f"{url!r} needs its scheme, e.g. http://{url or 'localhost:11434'}: "
            "embedding server URLs start with http:// or https://"
        )
    return url.rstrip("/")


# The registry's database URL schemes, and the SQLAlchemy async driver each one becomes.
DATABASE_SCHEMES = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def database_scheme(url: str) -> str:
    """The async driver URL scheme for ``url``; an unsupported scheme is a ValueError listing the
    supported ones (never echoing the URL, which may carry a password)."""
    scheme = url.split("://", 1)[0].strip().lower() if "://" in url else ""
    if scheme not in DATABASE_SCHEMES:
        shown = f"the scheme {scheme!r}" if scheme else "no scheme"
        raise ValueError(
            f"CITADEL_DATABASE_URL has {shown}; the registry runs on Postgres "
            "(postgresql://user@host:5432/db) or SQLite (sqlite:///path/registry.db), "
            "or leave it unset for SQLite under CITADEL_DATA_DIR"
        )
    return DATABASE_SCHEMES[scheme]


class Settings(BaseSettings):
    """Every knob Citadel reads; each field maps to ``CITADEL_<FIELD>``."""

    # hide_input_in_errors: a rejected value may be a URL with a password, or a key.
    model_config = SettingsConfigDict(env_prefix="CITADEL_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    data_dir: Path = Field(Path(".citadel"), description="Where embedded-mode state lives.")
    backup_dir: Path = Field(
        default_factory=lambda data: Path(data.get("data_dir", ".citadel")) / "backups",
        description="Where `citadel backup create` writes backups; default: <data_dir>/backups.",
    )
    collection: str = Field("documents", description="Default vector collection.")
    blocks: str | None = Field(
        None, description="The name of the Citadel block documents (saved by `citadel setup`) a flow run reads its embedder, "
        "cache, vector store and registry from, over this environment; unset: the environment alone.",
    )

    embedder: EmbedderKind = Field(
        "wordllama", description="wordllama (semantic) or hashing (lexical), both in-process with nothing to download; "
        "ollama or openai for a model server.",
    )
    embedding_model: str | None = Field(None, description="Model name; each embedder has a default.")
    embedding_dimensions: int | None = Field(None, gt=0, description="Needed for models Citadel does not know.")
    ollama_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:11434"], description="Comma-separated Ollama base URLs."
    )
    openai_base_url: str = Field("http://localhost:8080/v1", description="OpenAI-compatible server base URL.")
    openai_api_key: SecretStr | None = None
    embed_batch_size: int = Field(64, gt=0, description="Texts per embedding request.")
    embed_requests_per_server: int = Field(
        2, gt=0, le=64,
        description="Requests sent to one embedding server at once. 2 keeps a server that embeds one request at a time "
        "(Ollama queues the rest) busy: the next waits in its queue while one is embedded. Raise it for a server that "
        "embeds several at once (OLLAMA_NUM_PARALLEL, TEI, vLLM).",
    )
    embed_timeout_s: float = Field(60.0, gt=0)
    embed_retries: int = Field(4, ge=0)
    max_input_chars: int = Field(8000, gt=0, description="Longer inputs are truncated before sending.")
    embed_concurrency: int | None = Field(
        None, gt=0, description="Runs embedding at once with a shared backend, across all runs and workers "
        "(slots of a Prefect global concurrency limit); default: one per Ollama server, 4 for others."
    )

    redis_url: SecretStr | None = Field(None, description="Embedding cache; unset means an in-process LRU.")
    cache_ttl_s: int = Field(30 * 24 * 3600, gt=0)
    lru_size: int = Field(50_000, ge=0, description="In-process cache: vectors at most (0 turns it off).")
    lru_mb: int = Field(
        32, ge=0, description="In-process cache: megabytes of vectors at most, whichever bound comes first; "
        "at 768 dimensions 32 MB holds about 10,000 vectors, and an index run does not grow past it."
    )

    index_mmap_threshold_kb: int = Field(
        4096, ge=0, le=32 * 1024, description="An indexing process maps each buffer of at least this many KB on its own, "
        "so a long run's memory stays flat (glibc's mmap threshold, fixed; it otherwise rises to the largest buffer "
        "freed and a run's megabyte buffers fragment its heap). 0 leaves glibc's own.",
    )

    qdrant_url: str | None = Field(None, description="Qdrant server; unset means embedded mode under data_dir.")
    qdrant_api_key: SecretStr | None = None
    upsert_batch_size: int = Field(128, ge=64, le=256)
    upsert_parallel: int = Field(
        2, ge=1, le=8, description="Batches of points sent to a Qdrant server at once (Qdrant advises 2 to 4 parallel uploads)."
    )

    search_mode: SearchMode = Field(
        "hybrid", description="dense (the embedding's nearest chunks), sparse (the query's words, BM25) or hybrid (both, fused)."
    )
    search_fusion: Literal["convex", "rrf"] = Field(
        "convex", description="How hybrid search fuses its legs: convex (weighted sum of min-max-scaled scores) or rrf "
        "(weighted reciprocal rank fusion).",
    )
    search_dense_weight: float = Field(
        0.3, ge=0, le=1, description="The dense leg's weight in hybrid search; the lexical leg has the rest."
    )
    search_candidates: int = Field(100, ge=1, le=1000, description="Chunks each leg of a hybrid search brings to the fusion, at least.")
    search_rrf_k: int = Field(60, ge=1, description="k of reciprocal rank fusion (search_fusion rrf).")

    rerank_url: str | None = Field(
        None, description="A TEI-compatible reranker (POST <url>/rerank) that reorders a search's best hits; unset: no reranking."
    )
    rerank_api_key: SecretStr | None = Field(None, description="Sent to the reranker as a bearer token, never logged.")
    rerank_top_k: int = Field(20, ge=1, le=200, description="Hits of a search the reranker scores again (at least the limit asked).")
    rerank_timeout_s: float = Field(2.0, gt=0, description="A reranker slower than this is skipped: the search answers without it.")

    database_url: SecretStr | None = Field(None, description="Registry; unset means SQLite under data_dir.")

    chunk_size: int = Field(1000, gt=0)
    chunk_overlap: int = Field(100, ge=0)
    max_file_bytes: int = Field(10 * 1024 * 1024, gt=0)
    document_batch_size: int = Field(256, gt=0, description="Documents per indexing batch, at most.")
    document_batch_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Bytes of files per indexing batch, about.")
    parse_workers: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1), ge=1,
        description="Processes that parse PDF, HTML, Office and EPUB files apart from the run; default: 2, or 1 on one core.",
    )
    parse_timeout_s: float = Field(30.0, gt=0, description="A file whose parser runs longer is killed and goes to the dead letters.")
    parse_max_memory_mb: int = Field(
        1024, ge=PARSE_MEMORY_FLOOR_MB, description="Address space of one parser process, libraries included (about 250 MB "
        "of it before a file is read); a file that needs more goes to the dead letters.",
    )

    s3_endpoint_url: str | None = Field(
        None, description="The endpoint of an S3-compatible store (MinIO, Ceph, R2) for s3:// sources; unset means AWS S3. "
        "Credentials come from AWS's own chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance role), never from a setting.",
    )
    s3_region: str | None = Field(None, description="The region of s3:// sources' buckets; default: AWS_REGION, the profile's, us-east-1.")

    step_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated modules that register workflow step types."
    )
    max_nesting_depth: int = Field(
        DEFAULT_MAX_DEPTH, ge=1, le=MAX_DEPTH_CEILING,
        description="Deepest nesting of arrays and objects in a request body or a workflow file; deeper input is refused.",
    )
    nightly_source: str = Field("docs", description="What the nightly deployment of `citadel serve` indexes.")
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per log line (time, level, logger, message, request or flow run id)."
    )

    @field_validator("ollama_urls", "step_modules", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return split_comma_list(value)

    @field_validator("ollama_urls")
    @classmethod
    def _need_one_url(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("CITADEL_OLLAMA_URLS needs at least one URL, e.g. http://localhost:11434")
        return [http_url(url) for url in value]

    @field_validator("openai_base_url")
    @classmethod
    def _need_http(cls, value: str) -> str:
        return http_url(value)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError("CITADEL_S3_ENDPOINT_URL needs its scheme, e.g. http://localhost:9000 (MinIO) or https://<account>.r2.cloudflarestorage.com")
        return value.strip().rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            database_scheme(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _chunking_fits(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"CITADEL_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than CITADEL_CHUNK_SIZE "
                f"({self.chunk_size}): each chunk repeats that many characters of the one before it"
            )
        return self

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def registry_url(self) -> str:
        """The SQLAlchemy async URL of the registry (asyncpg for Postgres, aiosqlite for SQLite)."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'registry.db').resolve()}"
        url = self.database_url.get_secret_value().strip()
        return database_scheme(url) + "://" + url.split("://", 1)[1]


def secret(value: SecretStr | None) -> str | None:
    """The plain value of an optional secret setting (URLs may carry passwords)."""
    return value.get_secret_value() if value is not None else None


SECRET_QUERY_KEYS = ("password", "passwd", "secret", "token", "key", "sslpassword")


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, in its user part or its query
    (``redis://host/0?password=...`` is accepted by redis-py), fit for messages and logs."""
    parts = original = urlsplit(url)
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}")
    if parts.query:
        pairs = [pair.partition("=") for pair in parts.query.split("&")]
        parts = parts._replace(query="&".join(
            f"{name}{sep}{'***' if sep and any(k in name.lower() for k in SECRET_QUERY_KEYS) else value}" for name, sep, value in pairs
        ))
    # Rebuilt only when something was masked: urlunsplit would also rewrite sqlite:////abs/path.
    return url if parts == original else urlunsplit(parts)


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment with ``overrides`` applied on top."""
    return Settings(**overrides)


class EmbedderConfig(BaseModel):
    """The non-secret embedder choice a flow run takes as a parameter (secrets stay in the environment)."""

    kind: EmbedderKind | None = None
    model: str | None = None
    dimensions: int | None = Field(None, gt=0)
    urls: list[str] | None = Field(None, description="Ollama base URLs, or the OpenAI-compatible base URL.")

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with this choice applied on top."""
        update: dict[str, object] = {}
        if self.kind:
            update["embedder"] = self.kind
        if self.model:
            update["embedding_model"] = self.model
        if self.dimensions:
            update["embedding_dimensions"] = self.dimensions
        if self.urls:
            kind = self.kind or settings.embedder
            update["ollama_urls" if kind == "ollama" else "openai_base_url"] = self.urls if kind == "ollama" else self.urls[0]
        return settings.model_copy(update=update)


def settings_for(embedder: EmbedderConfig | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, then an embedder choice, then explicit overrides."""
    settings = Settings(**overrides)
    return embedder.apply(settings) if embedder else settings
