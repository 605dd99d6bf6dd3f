"""The deployments, in Python, for ``citadel serve`` (the same ones ``prefect.yaml`` declares)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect import Flow

NIGHTLY_CRON = "0 2 * * *"
SOURCE_CHANGED_TRIGGER: dict[str, Any] = {
    "type": "event",
    "enabled": True,
    "match": {"prefect.resource.id": "citadel.source.*"},
    "expect": ["citadel.source.changed"],
    "after": ["citadel.source.changed"],
    "for_each": ["prefect.resource.id", "citadel.collection"],
    "posture": "Proactive",
    "threshold": 1,
    "within": 10,
    "parameters": {
        "source": "{{ event.resource['citadel.source'] }}",
        "collection": "{{ event.resource['citadel.collection'] }}",
    },
}
"""Live indexing (``citadel watch``): a source is indexed once it has been quiet for 10 s after a
change (each change restarts the wait), from the last event's source and collection."""


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: which flow, under which name, on what schedule and with what limits."""

    flow_name: str
    name: str
    entrypoint: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    concurrency_limit: int | None = None
    tags: tuple[str, ...] = ("citadel",)
    triggers: tuple[dict[str, Any], ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def catalog() -> list[DeploymentSpec]:
    """Every deployment; the nightly source and collection come from the settings (environment, .env)."""
    from citadel.settings import Settings

    settings = Settings()
    nightly_source, nightly_collection = settings.nightly_source, settings.collection
    return [
        DeploymentSpec(
            "index-corpus", "nightly", "flows/index_corpus.py:index_corpus",
            "Re-index the corpus every night; unchanged documents cost nothing.",
            {"source": nightly_source, "collection": nightly_collection},
            cron=NIGHTLY_CRON, concurrency_limit=1,
        ),
        DeploymentSpec(
            "index-corpus", "on-demand", "flows/index_corpus.py:index_corpus",
            "Index a source when asked (one shard of it when shard/shards are given).",
        ),
        DeploymentSpec(
            "index-corpus", "on-change", "flows/index_corpus.py:index_corpus",
            "Index a watched source again once its files changed and settled (citadel watch).",
            concurrency_limit=1, tags=("citadel", "live"), triggers=(SOURCE_CHANGED_TRIGGER,),
        ),
        DeploymentSpec(
            "index-sharded", "default", "flows/index_sharded.py:index_sharded",
            "Index a large corpus as one sub-run of index-corpus/on-demand per shard, across workers.",
            {"deployment": "index-corpus/on-demand"},
        ),
        DeploymentSpec(
            "run-workflow", "default", "flows/run_workflow.py:run_workflow",
            "Run a declarative workflow (JSON/YAML definition) as a graph of tasks.",
        ),
        DeploymentSpec(
            "embed-texts", "default", "flows/embed_texts.py:embed_texts",
            "Embed texts through the cache.",
        ),
        DeploymentSpec(
            "similarity-search", "default", "flows/similarity_search.py:similarity_search",
            "Embed a query and return the nearest chunks.",
        ),
    ]


def load_flow(entrypoint: str) -> Flow[..., Any]:
    """The flow object an entrypoint (``path/to/file.py:function``) names."""
    import importlib

    path, function = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow: Flow[..., Any] = getattr(module, function)
    return flow


def to_deployments(specs: list[DeploymentSpec] | None = None) -> list[Any]:
    """Runner deployments for ``prefect.serve`` (schedules and triggers included, no work pool)."""
    from prefect.events import DeploymentEventTrigger

    out = []
    for spec in specs or catalog():
        flow = load_flow(spec.entrypoint)
        out.append(
            flow.to_deployment(
                name=spec.name,
                description=spec.description,
                parameters=spec.parameters or None,
                cron=spec.cron,
                concurrency_limit=spec.concurrency_limit,
                tags=list(spec.tags),
                triggers=[DeploymentEventTrigger.model_validate(trigger) for trigger in spec.triggers] or None,
            )
        )
    return out
