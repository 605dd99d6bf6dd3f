"""A Qdrant REST server for tests: Qdrant's HTTP API in front of one embedded-mode store.

No real Qdrant can run here, so this server owns a ``QdrantClient(path=...)`` store and answers
the part of Qdrant's REST API that Citadel uses, parsing requests and writing answers with
Qdrant's own models (``qdrant_client.http.models``) and Qdrant's envelope and error statuses.
Clients reach it with ``QdrantClient(url=...)``, the production code path, over real TCP.

It runs in a background thread (:class:`QdrantTestServer`) or as its own process
(``python -m tests.support.qdrant_server --path DIR --port N``, started by
:func:`citadel.testing.qdrant_process.start_qdrant_process`),
so that several worker processes can share one store.

Collection snapshots (create, list, download, delete, upload, recover) answer as Qdrant's do; a
snapshot is opaque to clients, so this server writes its own archive: a tar of the collection's
config, its payload indexes and every point as stored (vectors bit for bit), kept under
``<store>/snapshots/<collection>/`` with a ``.checksum`` file beside it, as Qdrant keeps them.
With ``api_key`` every route but the probes wants Qdrant's ``api-key`` header (or a bearer token).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email.parser
import email.policy
import hashlib
import hmac
import importlib.metadata
import io
import itertools
import json
import os
import pickle
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import uvicorn
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from qdrant_client import QdrantClient
from qdrant_client.http import models
from qdrant_client.local.utils import normalize_point_id
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from citadel.store import prepare_embedded_write
from citadel.testing.qdrant_process import URL_LINE_PREFIX
from tests.support import growing_arrays

REPO_ROOT = Path(__file__).resolve().parents[2]
INDEX_FILE = "server_payload_indexes.json"  # the payload indexes embedded mode does not keep
SNAPSHOTS_DIR = "snapshots"  # as Qdrant's ./snapshots/<collection>/<name>.snapshot
SNAPSHOT_FORMAT = 1
SNAPSHOT_PRIORITIES = ("replica", "snapshot", "no_sync")
UNAUTHENTICATED = frozenset({"/", "/healthz", "/livez", "/readyz"})  # Qdrant's whitelist
RAW_BODY = object()  # an endpoint that reads its body itself (multipart)


def server_version() -> str:
    """The version announced on ``GET /``: the client's own major.minor, so its compatibility check passes."""
    major, minor, *_ = importlib.metadata.version("qdrant-client").split(".")
    return f"{major}.{minor}.0"


class ApiError(Exception):
    """An answer in Qdrant's error envelope: ``{"status": {"error": message}, "time": ...}``, or
    with ``plain`` the bare text actix answers for a request its extractors refuse."""

    def __init__(self, status: int, message: str, *, plain: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.plain = plain


class Accepted:
    """What a handler returns for ``?wait=false``: Qdrant's 202 ``{"status": "accepted"}``."""


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"Not found: Collection `{name}` doesn't exist!")


def _storage_error(exc: Exception) -> ApiError:
    """Qdrant's status and wording for an error the embedded store raised."""
    message = str(exc)
    if isinstance(exc, ValueError):
        if found := re.fullmatch(r"Collection (.+) not found", message):
            return _not_found(found.group(1))
        if found := re.fullmatch(r"(Collection|Alias) (.+) already exists", message):
            return ApiError(409, f"Wrong input: {found.group(1)} `{found.group(2)}` already exists!")
        if found := re.fullmatch(r"Alias (.+) does not exist", message):
            return ApiError(404, f"Not found: Alias `{found.group(1)}` doesn't exist!")
        return ApiError(400, message if message.startswith("Wrong input:") else f"Wrong input: {message}")
    return ApiError(500, f"Service internal error: {message}")


def _format_error(exc: ValidationError | ValueError) -> ApiError:
    """A body that does not deserialise: 400, as Qdrant's JSON extractor answers."""
    if isinstance(exc, ValidationError):
        detail = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in exc.errors())
    else:
        detail = str(exc)
    return ApiError(400, f"Format error in JSON body: {detail}")


def _validation_error(field: str, value: Any, rule: str) -> ApiError:
    """A body that deserialises but breaks a rule: 422, as Qdrant's validator answers."""
    return ApiError(422, f"Validation error in JSON body: [{field}: value {value} invalid, {rule}]")


def _query_bool(request: Request, key: str, default: bool) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return default
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ApiError(400, f"Deserialize error in query parameters: {key}: provided string was not `true` or `false`")


def _envelope(result: Any, started: float) -> JSONResponse:
    return JSONResponse(
        {"result": to_jsonable_python(result, exclude_none=True), "status": "ok", "time": time.perf_counter() - started}
    )


def _error(error: ApiError, started: float) -> Response:
    if error.plain:
        return PlainTextResponse(error.message, status_code=error.status)
    body = {"status": {"error": error.message}, "time": time.perf_counter() - started}
    return JSONResponse(body, status_code=error.status)


def _answer(result: Any, started: float) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, Accepted):
        return JSONResponse({"status": "accepted", "time": time.perf_counter() - started}, status_code=202)
    return _envelope(result, started)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _query_priority(request: Request) -> str | None:
    value = request.query_params.get("priority")
    if value is not None and value not in SNAPSHOT_PRIORITIES:
        expected = ", ".join(f"`{choice}`" for choice in SNAPSHOT_PRIORITIES)
        raise ApiError(400, f"Deserialize error in query parameters: priority: unknown variant `{value}`, expected one of {expected}")
    return value


def _multipart_file(content_type: str, body: bytes, field: str) -> tuple[str | None, bytes]:
    """The file name and bytes of form field ``field`` in a multipart body (parsed by the standard
    library's MIME parser); actix's plain-text 400 when there is none."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, "Could not find Content-Type header", plain=True)
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if message.is_multipart():
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == field:
                data = part.get_payload(decode=True)
                return part.get_filename(), data if isinstance(data, bytes) else b""
    raise ApiError(400, f"Missing field `{field}`", plain=True)


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(data))


def _read_member(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    if handle is None:
        raise KeyError(f"{name} is not a file")
    return handle.read()


_Handler = Callable[[Request, Any], Any]


@contextlib.contextmanager
def _rows_already_deleted(persistence: Any) -> Iterator[None]:
    """While embedded mode hides points whose rows were deleted already: no row deletes of its own."""
    persistence.delete = lambda point_id: persistence._legacy_keys.pop(normalize_point_id(point_id), None)
    try:
        yield
    finally:
        del persistence.delete  # the class's method again


# Handlers that change nothing: every other request forgets the payload indexes' counts.
READS = frozenset({
    "_list_collections", "_list_aliases", "_get_collection", "_collection_exists", "_collection_aliases", "_retrieve",
    "_get_point", "_query", "_query_batch", "_scroll", "_count", "_list_snapshots", "_download_snapshot",
})


class QdrantRestApp:
    """The ASGI application: Qdrant's REST routes, each delegating to the embedded client under one lock."""

    def __init__(self, path: Path | str, *, api_key: str | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.api_key = api_key
        self.peer_id = random.randrange(10**15, 10**16)  # in snapshot names, as Qdrant's peer id
        # Every call holds self._lock, so the SQLite connections may move between worker threads.
        self.client = QdrantClient(path=str(self.path), force_disable_check_same_thread=True)
        # Writes cost what a server's do, not a commit waiting on the disk per point and a copy of
        # every vector per batch: the embedded store is tuned as Citadel tunes its own.
        for collection in self.client.get_collections().collections:
            prepare_embedded_write(self.client, collection.name, 0)
        self._lock = threading.Lock()
        self._operation_ids = itertools.count(1)
        self._indexes: dict[str, dict[str, Any]] = self._load_indexes()
        self._index_counts: dict[tuple[str, str], int] = {}  # (collection, field): points, until a write
        self.requests: Counter[tuple[str, str]] = Counter()
        # For benchmarks: QDRANT_TEST_STALL=POINTS:SECONDS holds the first upsert after that many
        # points for that long, as a server does that grows its arrays or compacts its segments.
        points, _, seconds = os.environ.get("QDRANT_TEST_STALL", "").partition(":")
        self._stall = (int(points), float(seconds)) if points and seconds else None
        self._points_upserted = 0
        self._app = Starlette(
            routes=self._routes(),
            exception_handlers={404: self._no_route, 405: self._no_route},
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.api_key is not None and scope["type"] == "http" and scope["path"] not in UNAUTHENTICATED:
            headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
            given = headers.get("api-key")
            if given is None and headers.get("authorization", "").startswith("Bearer "):
                given = headers["authorization"].removeprefix("Bearer ")
            if given is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
                reason = "Must provide an API key or an Authorization bearer token" if given is None else "Invalid API key or JWT"
                await PlainTextResponse(reason, status_code=401)(scope, receive, send)
                return
        await self._app(scope, receive, send)

    def close(self) -> None:
        """Close the embedded store (after any running call), releasing its folder lock."""
        with self._lock:
            self.client.close()

    # routing -------------------------------------------------------------------------------
    def _routes(self) -> list[Route]:
        c = "/collections/{name}"
        table: list[tuple[str, str, _Handler, Any]] = [
            ("GET", "/collections", self._list_collections, None),
            ("GET", "/aliases", self._list_aliases, None),
            ("POST", "/collections/aliases", self._update_aliases, models.ChangeAliasesOperation),
            ("GET", c, self._get_collection, None),
            ("GET", c + "/exists", self._collection_exists, None),
            ("PUT", c, self._create_collection, models.CreateCollection),
            ("PATCH", c, self._update_collection, models.UpdateCollection),
            ("DELETE", c, self._delete_collection, None),
            ("GET", c + "/aliases", self._collection_aliases, None),
            ("PUT", c + "/index", self._create_index, models.CreateFieldIndex),
            ("DELETE", c + "/index/{field_name}", self._delete_index, None),
            ("PUT", c + "/points", self._upsert, models.PointInsertOperations),
            ("POST", c + "/points", self._retrieve, models.PointRequest),
            ("GET", c + "/points/{id}", self._get_point, None),
            ("POST", c + "/points/delete", self._delete_points, models.PointsSelector),
            ("POST", c + "/points/query", self._query, models.QueryRequest),
            ("POST", c + "/points/query/batch", self._query_batch, models.QueryRequestBatch),
            ("POST", c + "/points/query/groups", self._query_groups, models.QueryGroupsRequest),
            ("POST", c + "/points/scroll", self._scroll, models.ScrollRequest),
            ("POST", c + "/points/count", self._count, models.CountRequest),
            ("GET", c + "/snapshots", self._list_snapshots, None),
            ("POST", c + "/snapshots", self._create_snapshot, None),
            ("POST", c + "/snapshots/upload", self._upload_snapshot, RAW_BODY),
            ("PUT", c + "/snapshots/recover", self._recover_snapshot, models.SnapshotRecover),
            ("GET", c + "/snapshots/{snapshot_name}", self._download_snapshot, None),
            ("DELETE", c + "/snapshots/{snapshot_name}", self._delete_snapshot, None),
        ]
        routes = [
            Route("/", self._root, methods=["GET"]),
            Route("/healthz", self._probe("healthz check passed"), methods=["GET"]),
            Route("/livez", self._probe("livez check passed"), methods=["GET"]),
            Route("/readyz", self._probe("all shards are ready"), methods=["GET"]),
        ]
        for method, path, handler, body_model in table:
            routes.append(Route(path, self._endpoint(method, path, handler, body_model), methods=[method]))
        return routes

    def _endpoint(self, method: str, path: str, handler: _Handler, body_model: Any) -> Callable[[Request], Any]:
        adapter = TypeAdapter(body_model) if body_model not in (None, RAW_BODY) else None

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            self.requests[(method, path)] += 1
            raw = await request.body()
            fetched: Path | None = None
            try:
                body: Any = raw if body_model is RAW_BODY else None
                if adapter is not None:
                    try:
                        body = adapter.validate_json(raw)
                    except (ValidationError, ValueError) as exc:
                        raise _format_error(exc) from exc
                if isinstance(body, models.SnapshotRecover):
                    # Fetched before taking the lock: the URL may be this very server.
                    body, downloaded = await self._fetch_snapshot(body)
                    fetched = body if downloaded else None
                result = await run_in_threadpool(self._locked, handler, request, body)
            except ApiError as exc:
                return _error(exc, started)
            finally:
                if fetched is not None:
                    fetched.unlink(missing_ok=True)  # as Qdrant removes a downloaded snapshot after recovery
            return _answer(result, started)

        return endpoint

    def _locked(self, handler: _Handler, request: Request, body: Any) -> Any:
        with self._lock:
            if handler.__name__ not in READS:
                self._index_counts.clear()  # anything else may change what a payload index counts
            try:
                return handler(request, body)
            except ApiError:
                raise
            except Exception as exc:
                raise _storage_error(exc) from exc

    @staticmethod
    async def _root(request: Request) -> Response:
        return JSONResponse({"title": "qdrant - vector search engine", "version": server_version(), "commit": None})

    @staticmethod
    def _probe(text: str) -> Callable[[Request], Any]:
        async def probe(request: Request) -> Response:
            return PlainTextResponse(text)

        return probe

    @staticmethod
    async def _no_route(request: Request, exc: HTTPException) -> Response:
        return Response(status_code=404)  # actix answers unknown routes and methods with an empty 404

    # helpers (called under the lock) -------------------------------------------------------
    def _require(self, name: str) -> str:
        """The collection ``name`` stands for (itself or an alias's target); 404 when there is none."""
        if name in {c.name for c in self.client.get_collections().collections}:
            return name
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == name:
                return alias.collection_name
        raise _not_found(name)

    def _update_result(self, request: Request) -> models.UpdateResult:
        wait = _query_bool(request, "wait", False)
        status = models.UpdateStatus.COMPLETED if wait else models.UpdateStatus.ACKNOWLEDGED
        return models.UpdateResult(operation_id=next(self._operation_ids), status=status)

    def _load_indexes(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads((self.path / INDEX_FILE).read_text())
        except FileNotFoundError:
            return {}

    def _save_indexes(self) -> None:
        target = self.path / INDEX_FILE
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._indexes))
        os.replace(temporary, target)

    def _payload_schema(self, collection: str) -> dict[str, models.PayloadIndexInfo]:
        schema: dict[str, models.PayloadIndexInfo] = {}
        for field, stored in self._indexes.get(collection, {}).items():
            field_schema = TypeAdapter(models.PayloadFieldSchema).validate_python(stored)
            if isinstance(field_schema, models.PayloadSchemaType):
                data_type, params = field_schema, None
            else:
                data_type, params = models.PayloadSchemaType(field_schema.type.value), field_schema
            points = self._points_with(collection, field)
            schema[field] = models.PayloadIndexInfo(data_type=data_type, params=params, points=points)
        return schema

    def _points_with(self, collection: str, field: str) -> int:
        """Points whose payload has a value for ``field``, as Qdrant counts a payload index's points.

        A top-level field is counted over the embedded collection's payloads directly: the filtered
        count evaluates its filter point by point (0.7 s per field at 60,000 points), so reading a
        collection cost seconds, where a real server answers from its index in milliseconds. The
        count is kept until the next request that is not a read (0.03 s a field at 60,000 points).
        """
        key = (collection, field)
        if key not in self._index_counts:
            self._index_counts[key] = self._count_points_with(collection, field)
        return self._index_counts[key]

    def _count_points_with(self, collection: str, field: str) -> int:
        stored = self._stored(collection)
        if stored is not None and "." not in field and "[" not in field:
            deleted = stored.deleted
            return sum(
                1 for index, payload in enumerate(stored.payload)
                if not deleted[index] and payload.get(field) not in (None, [])
            )
        has_value = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=field))])
        return self.client.count(collection, count_filter=has_value, exact=True).count

    def _check_dense_query(self, collection: str, query: Any, using: str | None) -> None:
        """Refuse a plain vector of the wrong size with Qdrant's message (embedded mode fails obscurely)."""
        if isinstance(query, models.NearestQuery):
            query = query.nearest
        if not (isinstance(query, list) and query and all(isinstance(x, float) for x in query)):
            return
        vectors = self.client.get_collection(collection).config.params.vectors
        params = vectors if isinstance(vectors, models.VectorParams) else (vectors or {}).get(using or "")
        if isinstance(params, models.VectorParams) and len(query) != params.size:
            raise ApiError(400, f"Wrong input: Vector dimension error: expected dim: {params.size}, got {len(query)}")

    # collections ---------------------------------------------------------------------------
    def _list_collections(self, request: Request, body: None) -> models.CollectionsResponse:
        return self.client.get_collections()

    def _get_collection(self, request: Request, body: None) -> models.CollectionInfo:
        collection = self._require(request.path_params["name"])
        info = self.client.get_collection(collection)
        return info.model_copy(update={"payload_schema": self._payload_schema(collection)})

    def _collection_exists(self, request: Request, body: None) -> models.CollectionExistence:
        return models.CollectionExistence(exists=self.client.collection_exists(request.path_params["name"]))

    def _create_collection(self, request: Request, body: models.CreateCollection) -> bool:
        name = request.path_params["name"]
        vectors = body.vectors
        for params in (vectors.values() if isinstance(vectors, dict) else [vectors] if vectors else []):
            if params.size < 1:
                raise _validation_error("vectors.size", params.size, "must be 1 or larger")
        self.client.create_collection(
            name,
            vectors_config=vectors,
            sparse_vectors_config=body.sparse_vectors,
            metadata=body.metadata,
            shard_number=body.shard_number,
            replication_factor=body.replication_factor,
            write_consistency_factor=body.write_consistency_factor,
            on_disk_payload=body.on_disk_payload,
            hnsw_config=body.hnsw_config,
            optimizers_config=body.optimizers_config,
            wal_config=body.wal_config,
            quantization_config=body.quantization_config,
            sharding_method=body.sharding_method,
            strict_mode_config=body.strict_mode_config,
        )
        if self._indexes.pop(name, None) is not None:
            self._save_indexes()
        return True

    def _create_from_config(self, name: str, config: models.CollectionConfig) -> None:
        """Create ``name`` with a snapshot's configuration (what embedded mode keeps of it)."""
        params = config.params
        self.client.create_collection(
            name,
            vectors_config=params.vectors,
            sparse_vectors_config=params.sparse_vectors,
            metadata=config.metadata,
            shard_number=params.shard_number,
            replication_factor=params.replication_factor,
            write_consistency_factor=params.write_consistency_factor,
            on_disk_payload=params.on_disk_payload,
            sharding_method=params.sharding_method,
        )
        if self._indexes.pop(name, None) is not None:
            self._save_indexes()

    def _update_collection(self, request: Request, body: models.UpdateCollection) -> bool:
        collection = self._require(request.path_params["name"])
        return self.client.update_collection(
            collection, sparse_vectors_config=body.sparse_vectors, metadata=body.metadata, vectors_config=body.vectors
        )

    def _delete_collection(self, request: Request, body: None) -> bool:
        name = request.path_params["name"]  # as in Qdrant, an alias is not resolved here: deleting it answers false
        existed = self.client.delete_collection(name)
        if existed and self._indexes.pop(name, None) is not None:
            self._save_indexes()
        return existed

    def _create_index(self, request: Request, body: models.CreateFieldIndex) -> models.UpdateResult:
        collection = self._require(request.path_params["name"])
        if body.field_schema is None:
            raise ApiError(
                400, "Wrong input: Can't auto-detect field type, please specify `field_schema` in the request"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "payload indexes have no effect in local mode"
            self.client.create_payload_index(collection, body.field_name, body.field_schema)
        stored = to_jsonable_python(body.field_schema, exclude_none=True)
        self._indexes.setdefault(collection, {})[body.field_name] = stored
        self._save_indexes()
        return self._update_result(request)

    def _delete_index(self, request: Request, body: None) -> models.UpdateResult:
        collection = self._require(request.path_params["name"])
        field = request.path_params["field_name"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.client.delete_payload_index(collection, field)
        if self._indexes.get(collection, {}).pop(field, None) is not None:
            self._save_indexes()
        return self._update_result(request)

    # aliases -------------------------------------------------------------------------------
    def _list_aliases(self, request: Request, body: None) -> models.CollectionsAliasesResponse:
        return self.client.get_aliases()

    def _collection_aliases(self, request: Request, body: None) -> models.CollectionsAliasesResponse:
        return self.client.get_collection_aliases(request.path_params["name"])

    def _update_aliases(self, request: Request, body: models.ChangeAliasesOperation) -> bool:
        # One call under the lock: a delete-and-create swap is atomic for every client.
        return self.client.update_collection_aliases(change_aliases_operations=body.actions)

    # points --------------------------------------------------------------------------------
    def _upsert(self, request: Request, body: models.PointsBatch | models.PointsList) -> models.UpdateResult:
        collection = self._require(request.path_params["name"])
        points = body.batch if isinstance(body, models.PointsBatch) else body.points
        options = {key: value for key in ("update_filter", "update_mode") if (value := getattr(body, key)) is not None}
        adding = len(points.ids) if isinstance(points, models.Batch) else len(points)
        prepare_embedded_write(self.client, collection, adding)
        self.client.upsert(collection, points=points, **options)
        self._points_upserted += adding
        if self._stall is not None and self._points_upserted >= self._stall[0]:
            time.sleep(self._stall[1])  # under the lock: every request waits, as for a real stall
            self._stall = None
        return self._update_result(request)

    def _retrieve(self, request: Request, body: models.PointRequest) -> list[models.Record]:
        collection = self._require(request.path_params["name"])
        return self.client.retrieve(
            collection,
            ids=body.ids,
            with_payload=body.with_payload if body.with_payload is not None else True,
            with_vectors=body.with_vector if body.with_vector is not None else False,
        )

    def _get_point(self, request: Request, body: None) -> models.Record:
        collection = self._require(request.path_params["name"])
        raw = request.path_params["id"]
        point_id: int | str = int(raw) if raw.isdigit() else raw
        records = self.client.retrieve(collection, ids=[point_id], with_payload=True, with_vectors=True)
        if not records:
            raise ApiError(404, f"Not found: No point with id {raw} found")
        return records[0]

    def _delete_points(
        self, request: Request, body: models.PointIdsList | models.FilterSelector
    ) -> models.UpdateResult:
        collection = self._require(request.path_params["name"])
        persistence = self._persistence(collection)
        if isinstance(body, models.PointIdsList) and persistence is not None:
            self._delete_rows_at_once(persistence, body.points)
            with _rows_already_deleted(persistence):
                self.client.delete(collection, points_selector=body)
        else:
            self.client.delete(collection, points_selector=body)
        return self._update_result(request)

    def _stored(self, collection: str) -> Any:
        """The embedded collection as qdrant-client keeps it in memory (its internals), or None."""
        return getattr(getattr(self.client, "_client", None), "collections", {}).get(collection)

    def _persistence(self, collection: str) -> Any:
        """The embedded collection's SQLite persistence (qdrant-client's internals), or None."""
        persistence = getattr(self._stored(collection), "storage", None)
        return persistence if hasattr(persistence, "encode_key") and hasattr(persistence, "storage") else None

    @staticmethod
    def _delete_rows_at_once(persistence: Any, point_ids: list[Any]) -> None:
        """Delete the points' rows in one transaction, as a server deletes a batch: embedded mode
        commits each point on its own (0.13 ms each in WAL mode, 0.45 s for an edited corpus's
        3,400 points), where a real server answers in milliseconds. Rows go before the points are
        hidden, as embedded mode orders it, so a failure leaves them all for a retry."""
        keys = []
        for point_id in point_ids:
            normalized = normalize_point_id(point_id)
            keys.append((persistence._legacy_keys.get(normalized, persistence.encode_key(normalized)),))
        with persistence.storage:
            persistence.storage.executemany("DELETE FROM points WHERE id = ?", keys)

    @staticmethod
    def _query_arguments(body: models.QueryRequest | models.QueryGroupsRequest) -> dict[str, Any]:
        """What a query and a grouped query pass alike to the client, with Qdrant's defaults."""
        return {
            "query": body.query, "using": body.using, "prefetch": body.prefetch, "query_filter": body.filter,
            "search_params": body.params, "limit": body.limit if body.limit is not None else 10,
            "with_payload": body.with_payload if body.with_payload is not None else False,
            "with_vectors": body.with_vector if body.with_vector is not None else False,
            "score_threshold": body.score_threshold, "lookup_from": body.lookup_from,
        }

    def _run_query(self, collection: str, body: models.QueryRequest) -> models.QueryResponse:
        if body.limit is not None and body.limit < 1:
            raise _validation_error("limit", body.limit, "must be 1 or larger")
        self._check_dense_query(collection, body.query, body.using)
        return self.client.query_points(collection, offset=body.offset, **self._query_arguments(body))

    def _query(self, request: Request, body: models.QueryRequest) -> models.QueryResponse:
        return self._run_query(self._require(request.path_params["name"]), body)

    def _query_groups(self, request: Request, body: models.QueryGroupsRequest) -> models.GroupsResult:
        collection = self._require(request.path_params["name"])
        for name, value in (("limit", body.limit), ("group_size", body.group_size)):
            if value is not None and value < 1:
                raise _validation_error(name, value, "must be 1 or larger")
        self._check_dense_query(collection, body.query, body.using)
        return self.client.query_points_groups(
            collection, group_by=body.group_by, group_size=body.group_size if body.group_size is not None else 3,
            with_lookup=body.with_lookup, **self._query_arguments(body),
        )

    def _query_batch(self, request: Request, body: models.QueryRequestBatch) -> list[models.QueryResponse]:
        collection = self._require(request.path_params["name"])
        return [self._run_query(collection, search) for search in body.searches]

    def _scroll(self, request: Request, body: models.ScrollRequest) -> models.ScrollResult:
        collection = self._require(request.path_params["name"])
        if body.limit is not None and body.limit < 1:
            raise _validation_error("limit", body.limit, "must be 1 or larger")
        points, next_offset = self.client.scroll(
            collection,
            scroll_filter=body.filter,
            limit=body.limit if body.limit is not None else 10,
            order_by=body.order_by,
            offset=body.offset,
            with_payload=body.with_payload if body.with_payload is not None else True,
            with_vectors=body.with_vector if body.with_vector is not None else False,
        )
        return models.ScrollResult(points=points, next_page_offset=next_offset)

    def _count(self, request: Request, body: models.CountRequest) -> models.CountResult:
        collection = self._require(request.path_params["name"])
        exact = body.exact if body.exact is not None else True
        return self.client.count(collection, count_filter=body.filter, exact=exact)

    # snapshots -----------------------------------------------------------------------------
    def _snapshot_dir(self, collection: str) -> Path:
        return self.path / SNAPSHOTS_DIR / collection

    def _snapshot_file(self, collection: str, snapshot: str) -> Path:
        """The file of ``snapshot`` of ``collection``; Qdrant's 404 for a name that leads anywhere else."""
        folder = self._snapshot_dir(collection).resolve()
        path = (folder / snapshot).resolve()
        if folder not in path.parents or not path.is_file():
            raise ApiError(404, f"Not found: Snapshot {snapshot} not found")
        return path

    @staticmethod
    def _describe(path: Path) -> models.SnapshotDescription:
        checksum_file = path.with_name(path.name + ".checksum")
        checksum = checksum_file.read_text().strip() if checksum_file.is_file() else None  # none for an uploaded one
        stat = path.stat()
        created = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).replace(tzinfo=None)  # Qdrant's naive UTC time
        return models.SnapshotDescription(name=path.name, creation_time=created.isoformat(), size=stat.st_size, checksum=checksum)

    def _stored_points(self, collection: str) -> list[models.PointStruct]:
        """Every point as the store keeps it on disk, oldest write first: the vectors as written, not
        as normalised in memory for cosine, so a recovered collection scores exactly as this one."""
        storage = self.path / "collection" / collection / "storage.sqlite"
        if not storage.is_file():
            return []
        conn = sqlite3.connect(f"{storage.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT point FROM points ORDER BY rowid DESC").fetchall()
        finally:
            conn.close()
        seen: set[str] = set()
        points = []
        for (value,) in rows:  # newest first: an older row of the same point (legacy key) is stale
            point = pickle.loads(value)  # written by the embedded store this server owns
            if str(point.id) not in seen:
                seen.add(str(point.id))
                points.append(models.PointStruct(id=point.id, vector=point.vector, payload=point.payload))
        points.reverse()
        return points

    def _write_archive(self, collection: str, target: Path) -> None:
        points = self._stored_points(collection)
        lines = b"".join(
            json.dumps(to_jsonable_python(point, exclude_none=True), separators=(",", ":")).encode() + b"\n" for point in points
        )
        header = {
            "format": SNAPSHOT_FORMAT,
            "collection": collection,
            "config": to_jsonable_python(self.client.get_collection(collection).config, exclude_none=True),
            "payload_indexes": self._indexes.get(collection, {}),
            "points": len(points),
            "points_sha256": hashlib.sha256(lines).hexdigest(),
        }
        with tarfile.open(target, "w") as archive:  # Qdrant's snapshots are plain tar files too
            _add_member(archive, "collection.json", json.dumps(header).encode())
            _add_member(archive, "points.jsonl", lines)

    @staticmethod
    def _read_archive(path: Path) -> tuple[models.CollectionConfig, dict[str, Any], list[models.PointStruct]]:
        """A snapshot's config, payload indexes and points, all checked before anything changes;
        Qdrant's 500 for a file that is not a readable snapshot."""
        try:
            with tarfile.open(path, "r:") as archive:
                head = _read_member(archive, "collection.json")
                lines = _read_member(archive, "points.jsonl")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ApiError(500, "Service internal error: File IO error: failed to iterate over archive") from exc
        except KeyError as exc:
            raise ApiError(500, f"Service internal error: the snapshot lacks {exc}") from exc
        try:
            header = json.loads(head)
            if header.get("format") != SNAPSHOT_FORMAT:
                raise ValueError(f"unknown snapshot format {header.get('format')!r}")
            if hashlib.sha256(lines).hexdigest() != header["points_sha256"]:
                raise ValueError("its points do not match their checksum")
            config = models.CollectionConfig.model_validate(header["config"])
            indexes = {str(field): schema for field, schema in header["payload_indexes"].items()}
            for schema in indexes.values():
                TypeAdapter(models.PayloadFieldSchema).validate_python(schema)
            points = [models.PointStruct.model_validate_json(line) for line in lines.splitlines() if line]
            if len(points) != header["points"]:
                raise ValueError(f"it holds {len(points)} points, its header says {header['points']}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ApiError(500, f"Service internal error: the snapshot is damaged: {reason}") from exc
        return config, indexes, points

    def _recover(self, name: str, path: Path) -> None:
        """Recover collection ``name`` (or the one it is an alias of) from the snapshot at ``path``.

        As in Qdrant: a missing collection is created with the snapshot's config; an existing one
        keeps its own config (its vectors must match the snapshot's) and aliases, and its points
        and payload indexes become the snapshot's.
        """
        config, indexes, points = self._read_archive(path)
        collections = {c.name for c in self.client.get_collections().collections}
        aliases = {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}
        collection = aliases.get(name, name)
        if collection in collections:
            current = self.client.get_collection(collection).config
            if current.params.vectors != config.params.vectors:
                raise ApiError(
                    400, "Wrong input: Snapshot is not compatible with existing collection: "
                    f"Collection vectors: {current.params.vectors!r} Snapshot Vectors: {config.params.vectors!r}",
                )
            # Emptied by recreating it: embedded mode computes a re-added point's vector in
            # another precision than a new one's, which would change scores in the last digits.
            kept = [alias for alias, target in aliases.items() if target == collection]
            self.client.delete_collection(collection)
            self._create_from_config(collection, current)
            self.client.update_collection_aliases(change_aliases_operations=[
                models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
                for alias in kept
            ])
        else:
            self._create_from_config(collection, config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "payload indexes have no effect in local mode"
            for field in set(self._indexes.get(collection, {})) - set(indexes):
                self.client.delete_payload_index(collection, field)
            for field, schema in indexes.items():
                field_schema = TypeAdapter(models.PayloadFieldSchema).validate_python(schema)
                self.client.create_payload_index(collection, field, field_schema)
        if indexes:
            self._indexes[collection] = indexes
        else:
            self._indexes.pop(collection, None)
        self._save_indexes()
        for start in range(0, len(points), 256):
            self.client.upsert(collection, points=points[start : start + 256])

    def _list_snapshots(self, request: Request, body: None) -> list[models.SnapshotDescription]:
        folder = self._snapshot_dir(self._require(request.path_params["name"]))
        if not folder.is_dir():
            return []
        return [self._describe(path) for path in sorted(folder.iterdir()) if path.is_file() and path.suffix == ".snapshot"]

    def _create_snapshot(self, request: Request, body: None) -> models.SnapshotDescription | Accepted:
        wait = _query_bool(request, "wait", True)
        collection = self._require(request.path_params["name"])
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H-%M-%S")
        folder = self._snapshot_dir(collection)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{collection}-{self.peer_id}-{stamp}.snapshot"
        temporary = target.with_suffix(".tmp")
        try:
            self._write_archive(collection, temporary)
            # The checksum first, so a listed snapshot always has one (as Qdrant does).
            target.with_name(target.name + ".checksum").write_text(_sha256(temporary))
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return self._describe(target) if wait else Accepted()

    def _download_snapshot(self, request: Request, body: None) -> Response:
        collection = self._require(request.path_params["name"])
        path = self._snapshot_file(collection, request.path_params["snapshot_name"])
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    def _delete_snapshot(self, request: Request, body: None) -> bool | Accepted:
        wait = _query_bool(request, "wait", True)
        collection = self._require(request.path_params["name"])
        path = self._snapshot_file(collection, request.path_params["snapshot_name"])
        path.unlink()
        path.with_name(path.name + ".checksum").unlink(missing_ok=True)
        return True if wait else Accepted()

    def _upload_snapshot(self, request: Request, body: bytes) -> bool | Accepted:
        wait = _query_bool(request, "wait", True)
        _query_priority(request)  # one node: every priority recovers the same way
        filename, data = _multipart_file(request.headers.get("content-type", ""), body, "snapshot")
        if (expected := request.query_params.get("checksum")) is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected.lower():
                raise ApiError(400, f"Checksum mismatch: expected {actual}, actual {expected}")  # Qdrant's order
        name = request.path_params["name"]
        # Kept in the collection's snapshots, as Qdrant keeps an uploaded snapshot (delete it after).
        folder = self._snapshot_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / (Path(filename).name if filename and Path(filename).name not in ("", ".", "..") else str(uuid.uuid4()))
        saved.write_bytes(data)
        self._recover(name, saved)
        return True if wait else Accepted()

    async def _fetch_snapshot(self, body: models.SnapshotRecover) -> tuple[Path, bool]:
        """The local file a recover request names (``file://`` inside the snapshots folder, as
        Qdrant allows) or downloads (``http(s)://``), checked against its checksum; and whether it
        was downloaded (to be deleted after)."""
        url = urlsplit(body.location)
        downloaded = False
        if url.scheme == "file":
            if url.netloc not in ("", "localhost"):
                raise ApiError(400, "Bad request: Invalid snapshot URI, file path must be absolute or on localhost")
            path = Path(unquote(url.path)).resolve()
            if (self.path / SNAPSHOTS_DIR).resolve() not in path.parents:
                raise ApiError(403, f'Forbidden: Snapshot file "{path}" must be inside snapshots directory')
            if not path.is_file():
                raise ApiError(400, f'Bad request: Snapshot file "{path}" does not exist')
        elif url.scheme in ("http", "https"):
            folder = self.path / SNAPSHOTS_DIR / ".downloads"
            folder.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=folder, suffix=".download")
            os.close(handle)
            path, downloaded = Path(name), True
            headers = {"api-key": body.api_key} if body.api_key else {}
            try:
                async with httpx.AsyncClient(timeout=600) as client, client.stream("GET", body.location, headers=headers) as got:
                    if got.is_error:
                        raise ApiError(400, f"Bad request: Failed to download snapshot from {body.location}: status - {got.status_code}")
                    with open(path, "wb") as out:
                        async for block in got.aiter_bytes(1 << 20):
                            out.write(block)
            except httpx.HTTPError as exc:
                path.unlink(missing_ok=True)
                raise ApiError(500, f"Service internal error: Http request error: {exc}") from exc
            except ApiError:
                path.unlink(missing_ok=True)
                raise
        else:
            raise ApiError(400, f"Bad request: URL {body.location} with scheme {url.scheme} is not supported")
        if body.checksum is not None:
            actual = await run_in_threadpool(_sha256, path)
            if actual != body.checksum.lower():
                if downloaded:
                    path.unlink(missing_ok=True)
                raise ApiError(400, f"Wrong input: Snapshot checksum mismatch: expected {body.checksum}, got {actual}")
        return path, downloaded

    def _recover_snapshot(self, request: Request, body: Path) -> bool | Accepted:
        wait = _query_bool(request, "wait", True)
        self._recover(request.path_params["name"], body)
        return True if wait else Accepted()


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket; IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _uvicorn_server(app: QdrantRestApp) -> uvicorn.Server:
    config = uvicorn.Config(
        app, interface="asgi3", lifespan="off", log_level="warning", access_log=False, loop="asyncio", http="h11"
    )
    return uvicorn.Server(config)


class QdrantTestServer:
    """The server in a daemon thread of this process, on a free port of 127.0.0.1.

    Use it as a context manager or call :meth:`start` and :meth:`stop`; the store folder is locked
    (as by any embedded client) while it runs.
    """

    def __init__(self, path: Path | str, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self.path = Path(path)
        self.host = host
        self.api_key = api_key
        self.port: int | None = port or None
        self._requested_port = port
        self.app: QdrantRestApp | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._thread is None or self.port is None:
            raise RuntimeError("the Qdrant test server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> Counter[tuple[str, str]]:
        """Requests received, by (method, route template), e.g. ``("PUT", "/collections/{name}/points")``."""
        assert self.app is not None
        return self.app.requests

    def start(self) -> QdrantTestServer:
        """Open the store, bind the port and serve; returns once the server accepts connections."""
        if self._thread is not None:
            return self
        self.app = QdrantRestApp(self.path, api_key=self.api_key)
        sock = _bind(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        self._server = _uvicorn_server(self.app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"qdrant-server-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread = None
                self.app.close()
                raise RuntimeError("the Qdrant test server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving, join the thread and close the store."""
        if self._thread is None or self._server is None or self.app is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)
        self.app.close()
        self._thread = None
        self._server = None

    def __enter__(self) -> QdrantTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def store_held_by_another_process(path: Path | str) -> Iterator[subprocess.Popen]:
    """Another process with the embedded store at ``path`` open (one process at a time may), as a
    second Citadel command would have it; killed on leaving."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from qdrant_client import QdrantClient; c = QdrantClient(path={str(path)!r}); "
         "print('held', flush=True); import time; time.sleep(300)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held", "the holder could not open the store"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def main(argv: list[str] | None = None) -> int:
    """Serve one store until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.qdrant_server", description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, type=Path, help="folder of the embedded-mode store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (announced on stdout)")
    args = parser.parse_args(argv)
    growing_arrays.install()  # this process's collections fill in linear time, as a real server's do
    # The key from the environment, as Qdrant reads it, never from a command line others can see.
    app = QdrantRestApp(args.path, api_key=os.environ.get("QDRANT__SERVICE__API_KEY") or None)
    # uvicorn shuts down gracefully on these signals, then raises them again: exit cleanly then.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    try:
        sock = _bind(args.host, args.port)
        print(f"{URL_LINE_PREFIX}http://{args.host}:{sock.getsockname()[1]}", flush=True)
        _uvicorn_server(app).run(sockets=[sock])  # installs SIGINT/SIGTERM handlers for a graceful exit
    finally:
        app.close()
    return 0


__all__ = [
    "ApiError",
    "QdrantRestApp",
    "QdrantTestServer",
    "server_version",
    "store_held_by_another_process",
]

if __name__ == "__main__":
    sys.exit(main())
