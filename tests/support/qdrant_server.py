"""A Qdrant REST server for tests: Qdrant's HTTP API in front of one embedded-mode store.

No real Qdrant can run here, so this server owns a ``QdrantClient(path=...)`` store and answers
the part of Qdrant's REST API that Citadel uses, parsing requests and writing answers with
Qdrant's own models (``qdrant_client.http.models``) and Qdrant's envelope and error statuses.
Clients reach it with ``QdrantClient(url=...)``, the production code path, over real TCP.

It runs in a background thread (:class:`QdrantTestServer`) or as its own process
(``python -m tests.support.qdrant_server --path DIR --port N``, started by
:func:`citadel.testing.qdrant_process.start_qdrant_process`),
so that several worker processes can share one store.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from qdrant_client import QdrantClient
from qdrant_client.http import models
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from citadel.testing.qdrant_process import URL_LINE_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]
INDEX_FILE = "server_payload_indexes.json"  # the payload indexes embedded mode does not keep


def server_version() -> str:
    """The version announced on ``GET /``: the client's own major.minor, so its compatibility check passes."""
    major, minor, *_ = importlib.metadata.version("qdrant-client").split(".")
    return f"{major}.{minor}.0"


class ApiError(Exception):
    """An answer in Qdrant's error envelope: ``{"status": {"error": message}, "time": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


def _error(error: ApiError, started: float) -> JSONResponse:
    body = {"status": {"error": error.message}, "time": time.perf_counter() - started}
    return JSONResponse(body, status_code=error.status)


_Handler = Callable[[Request, Any], Any]


class QdrantRestApp:
    """The ASGI application: Qdrant's REST routes, each delegating to the embedded client under one lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        # Every call holds self._lock, so the SQLite connections may move between worker threads.
        self.client = QdrantClient(path=str(self.path), force_disable_check_same_thread=True)
        self._lock = threading.Lock()
        self._operation_ids = itertools.count(1)
        self._indexes: dict[str, dict[str, Any]] = self._load_indexes()
        self.requests: Counter[tuple[str, str]] = Counter()
        self._app = Starlette(
            routes=self._routes(),
            exception_handlers={404: self._no_route, 405: self._no_route},
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
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
            ("POST", c + "/points/scroll", self._scroll, models.ScrollRequest),
            ("POST", c + "/points/count", self._count, models.CountRequest),
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
        adapter = TypeAdapter(body_model) if body_model is not None else None

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            self.requests[(method, path)] += 1
            raw = await request.body()
            try:
                body = None
                if adapter is not None:
                    try:
                        body = adapter.validate_json(raw)
                    except (ValidationError, ValueError) as exc:
                        raise _format_error(exc) from exc
                result = await run_in_threadpool(self._locked, handler, request, body)
            except ApiError as exc:
                return _error(exc, started)
            return _envelope(result, started)

        return endpoint

    def _locked(self, handler: _Handler, request: Request, body: Any) -> Any:
        with self._lock:
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
            has_value = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=field))])
            points = self.client.count(collection, count_filter=has_value, exact=True).count
            schema[field] = models.PayloadIndexInfo(data_type=data_type, params=params, points=points)
        return schema

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
        self.client.upsert(collection, points=points, **options)
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
        self.client.delete(collection, points_selector=body)
        return self._update_result(request)

    def _run_query(self, collection: str, body: models.QueryRequest) -> models.QueryResponse:
        if body.limit is not None and body.limit < 1:
            raise _validation_error("limit", body.limit, "must be 1 or larger")
        self._check_dense_query(collection, body.query, body.using)
        return self.client.query_points(
            collection,
            query=body.query,
            using=body.using,
            prefetch=body.prefetch,
            query_filter=body.filter,
            search_params=body.params,
            limit=body.limit if body.limit is not None else 10,
            offset=body.offset,
            with_payload=body.with_payload if body.with_payload is not None else False,
            with_vectors=body.with_vector if body.with_vector is not None else False,
            score_threshold=body.score_threshold,
            lookup_from=body.lookup_from,
        )

    def _query(self, request: Request, body: models.QueryRequest) -> models.QueryResponse:
        return self._run_query(self._require(request.path_params["name"]), body)

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

    def __init__(self, path: Path | str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.path = Path(path)
        self.host = host
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
        self.app = QdrantRestApp(self.path)
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
    app = QdrantRestApp(args.path)
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
