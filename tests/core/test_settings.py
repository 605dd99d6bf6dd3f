"""Settings: embedded defaults, CITADEL_ environment variables, .env files and embedder choices."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from citadel.settings import EmbedderConfig, Settings, get_settings, settings_for
from citadel.variables import unknown_variables


def test_defaults_need_no_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no CITADEL_ variable at all everything runs embedded."""
    monkeypatch.delenv("CITADEL_DATA_DIR")
    s = Settings()
    assert s.data_dir == Path(".citadel")
    assert s.embedder == "wordllama" and s.search_mode == "hybrid"
    assert s.embedding_model is None and s.embedding_dimensions is None
    assert s.ollama_urls == ["http://localhost:11434"]
    assert s.redis_url is None and s.qdrant_url is None and s.database_url is None
    assert s.collection == "documents"
    assert (s.chunk_size, s.chunk_overlap) == (1000, 100)
    assert s.upsert_batch_size == 128
    assert s.qdrant_path == Path(".citadel") / "qdrant"
    assert s.registry_url == f"sqlite+aiosqlite:///{(Path.cwd() / '.citadel' / 'registry.db').resolve()}"


def test_data_dir_from_environment(data_dir: Path) -> None:
    """CITADEL_DATA_DIR moves the embedded store and the SQLite registry."""
    s = get_settings()
    assert s.data_dir == data_dir
    assert s.qdrant_path == data_dir / "qdrant"
    assert s.registry_url == f"sqlite+aiosqlite:///{(data_dir / 'registry.db').resolve()}"


def test_environment_switches_embedder(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CITADEL_ variables select the embedder, model, size and backends."""
    monkeypatch.setenv("CITADEL_EMBEDDER", "openai")
    monkeypatch.setenv("CITADEL_EMBEDDING_MODEL", "text-embedding-3-small")
    monkeypatch.setenv("CITADEL_EMBEDDING_DIMENSIONS", "1536")
    monkeypatch.setenv("CITADEL_OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("CITADEL_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("CITADEL_CHUNK_SIZE", "500")
    s = Settings()
    assert s.embedder == "openai"
    assert s.embedding_model == "text-embedding-3-small"
    assert s.embedding_dimensions == 1536
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(s)
    assert s.redis_url.get_secret_value() == "redis://cache:6379/0"
    assert "cache:6379" not in repr(s), "URLs that may carry passwords are secret"
    assert s.chunk_size == 500


def test_unknown_embedder_rejected(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only hashing, wordllama, ollama and openai are valid embedders."""
    monkeypatch.setenv("CITADEL_EMBEDDER", "word2vec")
    with pytest.raises(ValidationError, match="embedder"):
        Settings()


@pytest.mark.parametrize(("name", "value"), [("CITADEL_UPSERT_BATCH_SIZE", "10"), ("CITADEL_UPSERT_BATCH_SIZE", "1000"),
                                             ("CITADEL_CHUNK_SIZE", "0"), ("CITADEL_EMBEDDING_DIMENSIONS", "-3")])
def test_out_of_range_numbers_rejected(data_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """Numbers outside their documented ranges are refused."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_comma_separated_ollama_urls(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CITADEL_OLLAMA_URLS splits on commas, trims spaces and trailing slashes, drops empties."""
    monkeypatch.setenv("CITADEL_EMBEDDER", "ollama")
    monkeypatch.setenv("CITADEL_OLLAMA_URLS", " http://gpu1:11434/ , http://gpu2:11434,,")
    s = Settings()
    assert s.embedder == "ollama"
    assert s.ollama_urls == ["http://gpu1:11434", "http://gpu2:11434"]


def test_single_ollama_url(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A single URL is a one-element list."""
    monkeypatch.setenv("CITADEL_OLLAMA_URLS", "http://one:11434")
    assert Settings().ollama_urls == ["http://one:11434"]


def test_empty_ollama_urls_rejected(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A list with no URL is refused with an example of a valid value."""
    monkeypatch.setenv("CITADEL_OLLAMA_URLS", " , ")
    with pytest.raises(ValidationError, match="needs at least one URL"):
        Settings()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/citadel", "postgresql+asyncpg://u:p@db:5432/citadel"),
        ("postgres://u@db/citadel", "postgresql+asyncpg://u@db/citadel"),
        ("postgresql+psycopg://u@db/c", "postgresql+asyncpg://u@db/c"),
        ("postgresql+psycopg2://u@db/c", "postgresql+asyncpg://u@db/c"),
        ("postgresql+asyncpg://u@db/c", "postgresql+asyncpg://u@db/c"),
        ("sqlite:///var/lib/citadel.db", "sqlite+aiosqlite:///var/lib/citadel.db"),
        ("sqlite+aiosqlite:////abs/r.db", "sqlite+aiosqlite:////abs/r.db"),
    ],
)
def test_registry_url_normalised(data_dir: Path, monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    """Any usual Postgres or SQLite URL becomes its async-driver form."""
    monkeypatch.setenv("CITADEL_DATABASE_URL", given)
    assert Settings().registry_url == expected


def test_dotenv_file_honoured(data_dir: Path) -> None:
    """A .env in the working directory is read; real environment variables win over it."""
    Path(".env").write_text(
        "CITADEL_EMBEDDER=ollama\nCITADEL_OLLAMA_URLS=http://a:1,http://b:2/\nCITADEL_COLLECTION=from_dotenv\n"
        "CITADEL_DATA_DIR=/should/not/win\nUNRELATED=1\n",
        encoding="utf-8",
    )
    s = Settings()
    assert s.embedder == "ollama"
    assert s.ollama_urls == ["http://a:1", "http://b:2"]
    assert s.collection == "from_dotenv"
    assert s.data_dir == data_dir


def test_overrides_beat_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit keyword overrides take precedence over the environment."""
    monkeypatch.setenv("CITADEL_COLLECTION", "env")
    assert get_settings(collection="explicit").collection == "explicit"
    assert settings_for(None, collection="explicit").collection == "explicit"


def test_embedder_config_apply_ollama(data_dir: Path) -> None:
    """An Ollama choice sets kind, model, size and the URL list, leaving the input settings untouched."""
    base = Settings()
    applied = EmbedderConfig(kind="ollama", model="nomic-embed-text", dimensions=768,
                             urls=["http://x:11434", "http://y:11434"]).apply(base)
    assert applied.embedder == "ollama"
    assert applied.embedding_model == "nomic-embed-text"
    assert applied.embedding_dimensions == 768
    assert applied.ollama_urls == ["http://x:11434", "http://y:11434"]
    assert base.embedder == "wordllama" and base.embedding_model is None


def test_embedder_config_apply_openai_url(data_dir: Path) -> None:
    """For an OpenAI-compatible server the first URL becomes the base URL."""
    applied = EmbedderConfig(kind="openai", urls=["http://llm:8080/v1", "http://ignored"]).apply(Settings())
    assert applied.embedder == "openai"
    assert applied.openai_base_url == "http://llm:8080/v1"
    assert applied.ollama_urls == ["http://localhost:11434"]


def test_embedder_config_urls_follow_configured_kind(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """URLs without a kind go to the embedder already configured."""
    monkeypatch.setenv("CITADEL_EMBEDDER", "ollama")
    applied = EmbedderConfig(urls=["http://z:11434"]).apply(Settings())
    assert applied.embedder == "ollama"
    assert applied.ollama_urls == ["http://z:11434"]


def test_empty_embedder_config_changes_nothing(data_dir: Path) -> None:
    """An empty choice keeps every setting."""
    base = Settings()
    assert EmbedderConfig().apply(base) == base


def test_settings_for_applies_config_then_overrides(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """settings_for layers environment, embedder choice, then overrides."""
    monkeypatch.setenv("CITADEL_EMBEDDING_MODEL", "env-model")
    s = settings_for(EmbedderConfig(kind="ollama", model="chosen"), chunk_size=256)
    assert (s.embedder, s.embedding_model, s.chunk_size) == ("ollama", "chosen", 256)


def test_embedder_config_validates_dimensions() -> None:
    """A non-positive size is refused."""
    with pytest.raises(ValidationError):
        EmbedderConfig(dimensions=0)


@pytest.mark.parametrize("name,value", [("CITADEL_OLLAMA_URLS", "localhost:11434"), ("CITADEL_OPENAI_BASE_URL", "tei:8080/v1")])
def test_urls_without_a_scheme_are_rejected(data_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """Without its scheme a URL would be retried as a connection error until giving up."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=f"needs its scheme, e.g. http://{value}"):
        Settings()


def test_chunk_overlap_must_be_smaller_than_the_chunk_size(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked when the settings load, naming both variables, not when a run is half done."""
    monkeypatch.setenv("CITADEL_CHUNK_SIZE", "300")
    monkeypatch.setenv("CITADEL_CHUNK_OVERLAP", "300")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = caught.value.errors()[0]["msg"]
    assert "CITADEL_CHUNK_OVERLAP (300)" in message and "CITADEL_CHUNK_SIZE (300)" in message
    monkeypatch.setenv("CITADEL_CHUNK_OVERLAP", "299")
    assert Settings().chunk_overlap == 299


@pytest.mark.parametrize("url", ["mysql://root:pw@db/citadel", "mongodb://db/citadel", "registry.db"])
def test_an_unsupported_database_is_refused_with_the_supported_ones(data_dir: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("CITADEL_DATABASE_URL", url)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = caught.value.errors()[0]["msg"]
    assert "postgresql://" in message and "sqlite:///" in message
    assert "pw" not in str(caught.value), "a refused URL is not echoed: it may carry a password"


@pytest.mark.parametrize(
    ("url", "driver"),
    [("postgres://u@h/d", "postgresql+asyncpg://u@h/d"), ("postgresql+psycopg2://u@h/d", "postgresql+asyncpg://u@h/d"),
     ("sqlite:////tmp/r.db", "sqlite+aiosqlite:////tmp/r.db"), ("SQLITE:////tmp/r.db", "sqlite+aiosqlite:////tmp/r.db")],
)
def test_supported_database_urls_use_the_async_drivers(data_dir: Path, monkeypatch: pytest.MonkeyPatch, url: str, driver: str) -> None:
    monkeypatch.setenv("CITADEL_DATABASE_URL", url)
    assert Settings().registry_url == driver


def test_unknown_citadel_variables_are_named_with_the_closest_setting(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CITADEL_REDIS_ULR=redis://cache:6379/0\nOTHER=1\n")
    environ = {"CITADEL_EMBEDER": "ollama", "CITADEL_COLLECTION": "docs", "CITADEL_DEBUG": "1", "CITADEL_TEST_REDIS_URL": "x",
               "CITADEL_SOMETHING_ELSE_ENTIRELY": "1", "PATH": "/bin"}
    warnings = unknown_variables(environ, env_file)
    assert len(warnings) == 3
    assert any("CITADEL_EMBEDER" in w and "did you mean CITADEL_EMBEDDER?" in w for w in warnings)
    assert any("CITADEL_REDIS_ULR" in w and "did you mean CITADEL_REDIS_URL?" in w for w in warnings)
    assert any("CITADEL_SOMETHING_ELSE_ENTIRELY" in w and "README" in w for w in warnings)
    assert unknown_variables({f"CITADEL_{name.upper()}": "1" for name in Settings.model_fields}, None) == []


def test_every_setting_is_documented() -> None:
    """The README's table (and docs/api.md for the HTTP service) name every variable a setting reads."""
    from pathlib import Path

    from citadel.variables import setting_variables

    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text() + (root / "docs" / "api.md").read_text()
    missing = [name for name in setting_variables() if f"`{name}`" not in text]
    assert not missing, f"not documented: {', '.join(missing)}"
