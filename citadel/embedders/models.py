"""Known embedding models and their vector sizes."""

from __future__ import annotations

KNOWN_MODELS: dict[str, int] = {
    # Ollama library names
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
    "bge-m3": 1024,
    "bge-large": 1024,
    "snowflake-arctic-embed": 1024,
    "snowflake-arctic-embed2": 1024,
    "granite-embedding": 384,
    "paraphrase-multilingual": 768,
    # OpenAI and common Hugging Face names served by TEI, vLLM or Infinity
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "BAAI/bge-small-en-v1.5": 384,
    "BAAI/bge-base-en-v1.5": 768,
    "BAAI/bge-large-en-v1.5": 1024,
    "BAAI/bge-m3": 1024,
    "sentence-transformers/all-MiniLM-L6-v2": 384,
    "nomic-ai/nomic-embed-text-v1.5": 768,
}


def base_model_name(model: str) -> str:
    """``nomic-embed-text:latest`` -> ``nomic-embed-text``; the tag does not change the vector size."""
    return model.split(":", 1)[0] if ":" in model and "/" not in model.split(":", 1)[1] else model


def resolve_dimensions(model: str, dimensions: int | None) -> int:
    """The vector size of ``model``: explicit ``dimensions`` win, else the known table, else an error."""
    if dimensions is not None:
        if dimensions < 1:
            raise ValueError(f"embedding dimensions must be positive, got {dimensions}")
        return dimensions
    known = KNOWN_MODELS.get(base_model_name(model))
    if known is None:
        supported = ", ".join(sorted(KNOWN_MODELS))
        raise ValueError(
            f"Unsupported model {model!r}: its vector size is unknown. Supported models: {supported}. "
            "For another model set CITADEL_EMBEDDING_DIMENSIONS to its vector size."
        )
    return known
