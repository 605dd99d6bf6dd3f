"""Indexing: planning batches against the registry, the index run that embeds, writes, records and prunes
them, consistency checks and repair, and blue-green versions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.indexing import bluegreen
    from citadel.indexing.batches import (
        BatchPlan,
        EmbeddedBatch,
        PlannedDocument,
        SeenDocuments,
        WriteBatcher,
        WriteResult,
        batches_label,
        delete_documents,
        embed_plan,
        find_gone_documents,
        plan_batch,
        plan_groups,
        prepare_collection,
        prune_source,
        record_documents,
        resolve_dead_letters,
        upsert_vectors,
    )
    from citadel.indexing.consistency import awaiting_repair, check_store, reconcile, sample_point_ids, verify_store
    from citadel.indexing.repair import verify
    from citadel.indexing.run import (
        IndexRun,
        ResolvedSource,
        answer_unchanged,
        build_and_switch,
        check_before_run,
        index_source,
        resolve_source,
    )

__all__ = [
    "BatchPlan",
    "EmbeddedBatch",
    "IndexRun",
    "PlannedDocument",
    "ResolvedSource",
    "SeenDocuments",
    "WriteBatcher",
    "WriteResult",
    "answer_unchanged",
    "awaiting_repair",
    "batches_label",
    "bluegreen",
    "build_and_switch",
    "check_before_run",
    "check_store",
    "delete_documents",
    "embed_plan",
    "find_gone_documents",
    "index_source",
    "plan_batch",
    "plan_groups",
    "prepare_collection",
    "prune_source",
    "reconcile",
    "record_documents",
    "resolve_dead_letters",
    "resolve_source",
    "sample_point_ids",
    "upsert_vectors",
    "verify",
    "verify_store",
]

__getattr__ = lazy_exports(__name__, {
    "BatchPlan": "batches",
    "EmbeddedBatch": "batches",
    "IndexRun": "run",
    "PlannedDocument": "batches",
    "ResolvedSource": "run",
    "SeenDocuments": "batches",
    "WriteBatcher": "batches",
    "WriteResult": "batches",
    "answer_unchanged": "run",
    "awaiting_repair": "consistency",
    "batches_label": "batches",
    "build_and_switch": "run",
    "check_before_run": "run",
    "check_store": "consistency",
    "delete_documents": "batches",
    "embed_plan": "batches",
    "find_gone_documents": "batches",
    "index_source": "run",
    "plan_batch": "batches",
    "plan_groups": "batches",
    "prepare_collection": "batches",
    "prune_source": "batches",
    "reconcile": "consistency",
    "record_documents": "batches",
    "resolve_dead_letters": "batches",
    "resolve_source": "run",
    "sample_point_ids": "consistency",
    "upsert_vectors": "batches",
    "verify": "repair",
    "verify_store": "consistency",
})
