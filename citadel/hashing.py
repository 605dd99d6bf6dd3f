"""Content hashes and deterministic point ids: the identity that makes every write idempotent."""

from __future__ import annotations

import hashlib
import uuid

# Fixed namespace: changing it would change every point id and re-index every collection.
POINT_NAMESPACE = uuid.UUID("5c1f0b8e-6a0e-4d1e-9a57-3c2d7e0f4a11")


def sha256_text(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def point_id(collection: str, document_id: str, position: int, chunk_hash: str) -> str:
    """Stable uuid5 for one chunk of one document, so a retried upsert overwrites, never duplicates."""
    name = f"{collection}\x1f{document_id}\x1f{position}\x1f{chunk_hash}"
    return str(uuid.uuid5(POINT_NAMESPACE, name))
