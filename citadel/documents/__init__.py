"""Documents: listing a source (a folder, a glob, inline records, an S3 bucket's objects) inside its
sandbox roots, reading, decoding or parsing its files (PDF, HTML, Office, EPUB, in isolated parser
processes), and chunking their text at its sections' edges."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.documents.chunking import CHUNKER_VERSION, Chunk, chunk_sections, chunk_text
    from citadel.documents.isolation import ParserPool, close_shared_pool, shared_pool
    from citadel.documents.listing import SourceGroup, SourceListing, iter_groups, list_source, shard_listing
    from citadel.documents.loading import Document, LoadFailure, documents_from_records, has_rich_files, load_file, load_group
    from citadel.documents.objectloading import load_objects
    from citadel.documents.objectstore import (
        FetchedObject,
        ObjectEntry,
        ObjectStoreUnavailable,
        ObjectUnreadable,
        S3Location,
        S3Source,
        check_access,
        is_s3_uri,
        parse_s3_uri,
    )
    from citadel.documents.parsed import ParsedFile, ParseError, Section
    from citadel.documents.sharding import check_shard, shard_of
    from citadel.documents.sourceroots import SourceRoots, is_inline_name, source_name_problem
    from citadel.documents.suffixes import SUPPORTED_SUFFIXES

__all__ = [
    "CHUNKER_VERSION",
    "Chunk",
    "Document",
    "FetchedObject",
    "LoadFailure",
    "ObjectEntry",
    "ObjectStoreUnavailable",
    "ObjectUnreadable",
    "ParseError",
    "ParsedFile",
    "ParserPool",
    "S3Location",
    "S3Source",
    "SUPPORTED_SUFFIXES",
    "Section",
    "SourceGroup",
    "SourceListing",
    "SourceRoots",
    "check_access",
    "check_shard",
    "chunk_sections",
    "chunk_text",
    "close_shared_pool",
    "documents_from_records",
    "has_rich_files",
    "is_inline_name",
    "is_s3_uri",
    "iter_groups",
    "list_source",
    "load_file",
    "load_group",
    "load_objects",
    "parse_s3_uri",
    "shard_listing",
    "shard_of",
    "shared_pool",
    "source_name_problem",
]

__getattr__ = lazy_exports(__name__, {
    "CHUNKER_VERSION": "chunking",
    "Chunk": "chunking",
    "Document": "loading",
    "FetchedObject": "objectstore",
    "LoadFailure": "loading",
    "ObjectEntry": "objectstore",
    "ObjectStoreUnavailable": "objectstore",
    "ObjectUnreadable": "objectstore",
    "ParseError": "parsed",
    "ParsedFile": "parsed",
    "ParserPool": "isolation",
    "S3Location": "s3uri",
    "S3Source": "objectstore",
    "SUPPORTED_SUFFIXES": "suffixes",
    "Section": "parsed",
    "SourceGroup": "listing",
    "SourceListing": "listing",
    "SourceRoots": "sourceroots",
    "check_access": "objectstore",
    "check_shard": "sharding",
    "chunk_sections": "chunking",
    "chunk_text": "chunking",
    "close_shared_pool": "isolation",
    "documents_from_records": "loading",
    "has_rich_files": "loading",
    "is_inline_name": "sourceroots",
    "is_s3_uri": "s3uri",
    "iter_groups": "listing",
    "list_source": "listing",
    "load_file": "loading",
    "load_group": "loading",
    "load_objects": "objectloading",
    "parse_s3_uri": "s3uri",
    "shard_listing": "listing",
    "shard_of": "sharding",
    "shared_pool": "isolation",
    "source_name_problem": "sourceroots",
})
