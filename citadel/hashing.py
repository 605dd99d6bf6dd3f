"""Content hashes and deterministic point ids: the identity that makes every write idempotent."""

from __future__ import annotations

import hashlib
import uuid

# Fixed namespace: changing it would change every point id and re-index every collection.
POINT_NAMESPACE = uuid.UUID("5c1f0b8e-6a0e-4d1e-9a57-3c2d7e0f4a11")


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (from JSON or an undecodable file name) must hash, not crash.
    return text.encode("utf-8", "surrogatepass")


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (JSON can carry one, and an undecodable file
    name becomes one): it hashes, but no database, backend or cache can store it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def sha256_text(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(_utf8(text)).hexdigest()


def point_id(collection: str, document_id: str, position: int, chunk_hash: str) -> str:
    """Stable uuid5 for one chunk of one document, so a retried upsert overwrites, never duplicates."""
    name = f"{collection}\x1f{document_id}\x1f{position}\x1f{chunk_hash}"
    return str(uuid.UUID(bytes=hashlib.sha1(POINT_NAMESPACE.bytes + _utf8(name)).digest()[:16], version=5))
