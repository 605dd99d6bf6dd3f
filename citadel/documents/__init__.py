"""Documents: listing a source (a folder, a glob, inline records) inside its sandbox roots, reading and
decoding its files, and chunking their text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.documents.chunking import CHUNKER_VERSION, Chunk, chunk_text
    from citadel.documents.sharding import check_shard, shard_of
    from citadel.documents.sourceroots import SourceRoots, is_inline_name, source_name_problem
    from citadel.documents.sources import (
        SUPPORTED_SUFFIXES,
        Document,
        LoadFailure,
        SourceGroup,
        SourceListing,
        documents_from_records,
        iter_groups,
        list_source,
        load_file,
        load_group,
        shard_listing,
    )

__all__ = [
    "CHUNKER_VERSION",
    "Chunk",
    "Document",
    "LoadFailure",
    "SUPPORTED_SUFFIXES",
    "SourceGroup",
    "SourceListing",
    "SourceRoots",
    "check_shard",
    "chunk_text",
    "documents_from_records",
    "is_inline_name",
    "iter_groups",
    "list_source",
    "load_file",
    "load_group",
    "shard_listing",
    "shard_of",
    "source_name_problem",
]

__getattr__ = lazy_exports(__name__, {
    "CHUNKER_VERSION": "chunking",
    "Chunk": "chunking",
    "Document": "sources",
    "LoadFailure": "sources",
    "SUPPORTED_SUFFIXES": "sources",
    "SourceGroup": "sources",
    "SourceListing": "sources",
    "SourceRoots": "sourceroots",
    "check_shard": "sharding",
    "chunk_text": "chunking",
    "documents_from_records": "sources",
    "is_inline_name": "sourceroots",
    "iter_groups": "sources",
    "list_source": "sources",
    "load_file": "sources",
    "load_group": "sources",
    "shard_listing": "sources",
    "shard_of": "sharding",
    "source_name_problem": "sourceroots",
})
