"""What a workflow submitted over HTTP may name: it runs on the server, with the server's access.

Paths stay inside the caller's source grants within the configured source roots, collections
inside the caller's collection grants, embedders are only the configured ones (never a URL or a
key from the request), deployments only those on the allowlist and only for admins, and every
value that reaches one of these is given literally, not computed by another step (a caller that
reaches every collection may compute a collection).

These refusals answer early, with every problem's location; the run itself enforces the roots
where files are listed and opened, and the collections where a step resolves its own (the API
passes both to it), so nothing here is the only guard. Which runs a caller may see is here too.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from citadel.apisettings import ApiSettings
from citadel.auth import Identity
from citadel.collections import check_collection_name
from citadel.documents import SourceRoots, is_inline_name, is_s3_uri, parse_s3_uri
from citadel.errors import ConfigurationError
from citadel.settings import Settings
from citadel.workflows import COLLECTION_STEPS, SANDBOX_PARAMETERS, format_location, named_collections

_REFERENCE = "${"
BUILT_IN_STEPS = ("chunk", "embedding", "search", "index", "flow")
_LITERAL = "must be given literally, not as a reference"
_OUTSIDE = "outside the folders this key may index (its source grants, inside CITADEL_API_SOURCE_ROOTS)"


def caller_sandbox(identity: Identity, api: ApiSettings) -> SourceRoots:
    """The folders and buckets the caller's runs may read: its source grants inside the service's
    own sandbox (an admin: the service's)."""
    service = SourceRoots.of(api.sandbox)
    return service if identity.allows("admin") else identity.grants.sandbox(service)


def sandbox_entries(roots: SourceRoots) -> list[str]:
    """``roots`` as a run's ``source_roots`` names them: resolved folders and ``s3://`` prefixes."""
    return [str(folder) for folder in roots.folders] + [location.uri for location in roots.buckets]


def collection_grants(identity: Identity) -> list[str] | None:
    """The collection patterns a caller's run is bound to; None for one that reaches every collection."""
    return None if identity.reaches_every_collection else list(identity.grants.collections)


def _path_problem(source: str, roots: SourceRoots) -> str | None:
    if is_s3_uri(source):
        return _bucket_problem(source, roots)
    if not roots.folders:
        return "indexing a path over HTTP is off for this key; send inline records, or have an operator grant it a folder"
    pattern = glob.has_magic(source)
    if pattern and ".." in Path(source).parts:
        return "a glob may not contain '..'"
    base = Path(source)
    if pattern:  # the fixed folder before the first wildcard
        fixed = [part for part in Path(source).parts]
        index = next(i for i, part in enumerate(fixed) if glob.has_magic(part))
        base = Path(*fixed[:index]) if index else Path(".")
    if not roots.holds(base.expanduser()):  # symlinks and '..' followed
        return f"{source!r} is {_OUTSIDE}"
    return None


def _bucket_problem(source: str, roots: SourceRoots) -> str | None:
    if not roots.buckets:
        return ("indexing object storage over HTTP is off for this key; have an operator list buckets in "
                "CITADEL_API_SOURCE_BUCKETS and grant it one")
    try:
        location = parse_s3_uri(source)
    except ConfigurationError as exc:
        return str(exc)
    if not roots.holds_location(location):
        return f"{source!r} is not under a bucket and prefix this key may index (its source grants, inside CITADEL_API_SOURCE_BUCKETS)"
    return None


def _source_name_problem(name: str, roots: SourceRoots) -> str | None:
    """Why a run may not file inline records under ``name``: a path (it names, and prunes, a file
    source) must be absolute and inside the caller's folders; a name without '/' is inline."""
    if is_inline_name(name) or (Path(name).is_absolute() and roots.holds(name)):
        return None
    return (f"source_name {name!r} is a path {_OUTSIDE}; name inline records without '/' (e.g. 'crm'), "
            "or give an absolute path inside one of those folders")


def _collection_problems(
    params: dict[str, Any], kind: Any, identity: Identity, settings: Settings, where: tuple[str | int, ...]
) -> list[tuple[str, str]]:
    problem = _collection_problem(params, kind, identity, settings)
    return [(format_location(*where, "collection"), problem)] if problem else []


def _collection_problem(params: dict[str, Any], kind: Any, identity: Identity, settings: Settings) -> str | None:
    """Why a step may not use the collection it names (or, for ``index`` and ``search``, the
    default one): said without telling whether that collection exists."""
    if kind not in COLLECTION_STEPS and "collection" not in params:
        return None
    collection = params.get("collection")
    default = collection is None or collection == ""
    if default:
        collection = settings.collection
    if not isinstance(collection, str):
        return None  # the schema check reports it
    if _REFERENCE in collection:
        return None if identity.reaches_every_collection else f"{_LITERAL} (this key reaches only some collections)"
    try:
        check_collection_name(collection)
    except ConfigurationError as exc:
        return str(exc)
    if identity.reaches(collection):
        return None
    which = f"the service's default collection {collection!r} (no collection given)" if default else f"collection {collection!r}"
    return f"{which} is outside the collections this key may reach"


def _embedder_problems(embedder: Any, settings: Settings, models: list[str], where: tuple[str | int, ...]) -> list[tuple[str, str]]:
    if embedder is None:
        return []
    if not isinstance(embedder, dict):
        return [(format_location(*where), "must be an object")]
    found = []
    for key in ("urls",):
        if key in embedder:
            found.append((format_location(*where, key), "a request may not name embedding servers; the service uses its configured ones"))
    kind = embedder.get("kind")
    if kind is not None and kind != settings.embedder:
        found.append((format_location(*where, "kind"), f"this service embeds with {settings.embedder!r} only"))
    model = embedder.get("model")
    if model is not None and model not in models:
        found.append((format_location(*where, "model"), f"model {model!r} is not served here; served: {', '.join(models)}"))
    for key, value in embedder.items():
        if isinstance(value, str) and _REFERENCE in value:
            found.append((format_location(*where, key), "must be given literally, not as a reference"))
    return found


def _source_problems(params: dict[str, Any], roots: SourceRoots, where: tuple[str | int, ...]) -> list[tuple[str, str]]:
    """What is wrong with the ``source`` and ``source_name`` of an ``index`` step, or of a deployment a ``flow`` step starts."""
    found = []
    source = params.get("source")
    if isinstance(source, str):
        problem = _LITERAL if _REFERENCE in source else _path_problem(source, roots)
        if problem:
            found.append((format_location(*where, "source"), problem))
    name = params.get("source_name")
    if isinstance(name, str):  # the source whose documents a prune deletes: its own, never another's
        problem = _LITERAL if _REFERENCE in name else _source_name_problem(name, roots)
        if problem:
            found.append((format_location(*where, "source_name"), problem))
    return found


def _flow_problems(
    params: dict[str, Any], identity: Identity, api: ApiSettings, settings: Settings, models: list[str], where: tuple[str | int, ...]
) -> list[tuple[str, str]]:
    """What a ``flow`` step may not pass to its deployment: the sandbox's own parameters, a source
    outside the roots, and (for run-workflow) a workflow this service would refuse or a file to read."""
    inner = params.get("parameters")
    if isinstance(inner, str) and _REFERENCE in inner:
        return [(format_location(*where, "parameters"), _LITERAL)]
    if not isinstance(inner, dict):
        return []
    where = (*where, "parameters")
    found = [
        (format_location(*where, name), "set by the service from its own configuration and the caller, never by a request; remove it")
        for name in SANDBOX_PARAMETERS if name in inner
    ]
    found += _source_problems(inner, caller_sandbox(identity, api), where)
    if "collection" in inner:  # a deployment's own collection (its default) is the admin's to start
        found += _collection_problems(inner, None, identity, settings, where)
    workflow = inner.get("workflow")
    if isinstance(workflow, dict):
        found += _refusals(workflow, identity, api, settings, models, (*where, "workflow"))
    elif workflow is not None:
        found.append((format_location(*where, "workflow"), "give the workflow as an object; a file name or text is read on the server"))
    return found


def _refusals(
    workflow: dict[str, Any], identity: Identity, api: ApiSettings, settings: Settings, models: list[str], at: tuple[str | int, ...]
) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    roots = caller_sandbox(identity, api)
    steps = workflow.get("steps")
    if not isinstance(steps, list):
        return []  # the schema check reports it
    if len(steps) > api.api_max_workflow_steps:
        found.append((format_location(*at, "steps"),
                      f"{len(steps)} steps; at most {api.api_max_workflow_steps} per workflow (CITADEL_API_MAX_WORKFLOW_STEPS)"))
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        params = step.get("parameters") or {}
        if not isinstance(params, dict):
            continue
        kind = step.get("type")
        where: tuple[str | int, ...] = (*at, "steps", index, "parameters")
        if kind not in BUILT_IN_STEPS and not identity.reaches_every_collection:
            # A step module's own type may reach the store by any parameter: only for keys that reach it all.
            found.append((format_location(*at, "steps", index, "type"), f"step type {kind!r} is not one of "
                          f"{', '.join(BUILT_IN_STEPS)}: it runs only for keys that reach every collection"))
        found += _embedder_problems(params.get("embedder"), settings, models, (*where, "embedder"))
        model = params.get("model")
        if isinstance(model, str) and (model not in models or _REFERENCE in model):
            found.append((format_location(*where, "model"), f"model {model!r} is not served here; served: {', '.join(models)}"))
        if kind == "flow":
            found += _flow_step_problems(params, identity, api, settings, models, (*at, "steps", index))
            continue
        found += _collection_problems(params, kind, identity, settings, where)
        if kind == "index":
            found += _source_problems(params, roots, where)
    return found


def _flow_step_problems(
    params: dict[str, Any], identity: Identity, api: ApiSettings, settings: Settings, models: list[str], at: tuple[str | int, ...]
) -> list[tuple[str, str]]:
    """What a ``flow`` step at ``at`` may not do: start a deployment without the admin scope, or one off the allowlist."""
    found = []
    where = (*at, "parameters")
    deployment = params.get("deployment")
    if not identity.allows("admin"):
        found.append((format_location(*at, "type"), "a 'flow' step starts a deployment: it needs the admin scope"))
    if not isinstance(deployment, str) or deployment not in api.api_deployments:
        allowed = ", ".join(api.api_deployments) or "none"
        found.append((format_location(*where, "deployment"), f"not on the allowlist (CITADEL_API_DEPLOYMENTS: {allowed})"))
    return found + _flow_problems(params, identity, api, settings, models, where)


def workflow_refusals(
    workflow: dict[str, Any], identity: Identity, api: ApiSettings, settings: Settings, models: list[str]
) -> list[dict[str, str]]:
    """Everything in ``workflow`` that an HTTP caller may not ask for, with its location; a ``flow``
    step's parameters are the deployment's, checked as an ``index`` step's are (and a workflow it
    passes to run-workflow as this one)."""
    return [{"location": location, "message": message} for location, message in _refusals(workflow, identity, api, settings, models, ())]


def may_see(identity: Identity, owners: frozenset[str]) -> bool:
    """Whether a caller may see (and cancel) a run: the runs it submitted (``owners``: its own
    across rotations), every run for an admin or a key that reaches every collection. Two teams
    that share a collection never see each other's runs: a run's report holds its sources,
    queries and hits."""
    return identity.allows("admin") or identity.reaches_every_collection or identity.owner in owners


def workflow_collections(workflow: dict[str, Any], settings: Settings) -> str:
    """The collections a submitted workflow names, in a line for the audit trail."""
    return named_collections(workflow, settings.collection).describe()
