"""Indexing: planning batches against the registry, the one driver that embeds, writes, records and
prunes them (run by direct calls or by Prefect tasks), consistency checks and repair, and blue-green versions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.exports import lazy_exports

if TYPE_CHECKING:
    from citadel.indexing import bluegreen
    from citadel.indexing.consistency import awaiting_repair, check_store, reconcile, sample_point_ids, verify_store
    from citadel.indexing.lifecycle import IndexRun, ResolvedSource, check_before_run, resolve_source
    from citadel.indexing.pipeline import DirectSteps, Steps, index_batches, plan_label
    from citadel.indexing.planning import (
        BatchPlan,
        PlannedDocument,
        SeenDocuments,
        WriteBatcher,
        batches_label,
        plan_batch,
        plan_groups,
    )
    from citadel.indexing.repair import verify
    from citadel.indexing.run import answer_unchanged, build_and_switch, index_source
    from citadel.indexing.writing import (
        EmbeddedBatch,
        Pruned,
        WriteResult,
        delete_documents,
        embed_plan,
        find_gone_documents,
        prepare_collection,
        prune_source,
        record_documents,
        resolve_dead_letters,
        upsert_vectors,
    )

__all__ = [
    "BatchPlan",
    "DirectSteps",
    "EmbeddedBatch",
    "IndexRun",
    "PlannedDocument",
    "ResolvedSource",
    "SeenDocuments",
    "Steps",
    "WriteBatcher",
    "Pruned",
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
    "index_batches",
    "index_source",
    "plan_batch",
    "plan_groups",
    "plan_label",
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
    "BatchPlan": "planning",
    "DirectSteps": "pipeline",
    "EmbeddedBatch": "writing",
    "IndexRun": "lifecycle",
    "PlannedDocument": "planning",
    "ResolvedSource": "lifecycle",
    "SeenDocuments": "planning",
    "Steps": "pipeline",
    "WriteBatcher": "planning",
    "Pruned": "writing",
    "WriteResult": "writing",
    "answer_unchanged": "run",
    "awaiting_repair": "consistency",
    "batches_label": "planning",
    "build_and_switch": "run",
    "check_before_run": "lifecycle",
    "check_store": "consistency",
    "delete_documents": "writing",
    "embed_plan": "writing",
    "find_gone_documents": "writing",
    "index_batches": "pipeline",
    "index_source": "run",
    "plan_batch": "planning",
    "plan_groups": "planning",
    "plan_label": "pipeline",
    "prepare_collection": "writing",
    "prune_source": "writing",
    "reconcile": "consistency",
    "record_documents": "writing",
    "resolve_dead_letters": "writing",
    "resolve_source": "lifecycle",
    "sample_point_ids": "consistency",
    "upsert_vectors": "writing",
    "verify": "repair",
    "verify_store": "consistency",
}, modules=("bluegreen",))
