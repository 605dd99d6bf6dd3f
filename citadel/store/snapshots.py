"""A Qdrant server's snapshots over its REST API (no qdrant-client): what a backup and a restore of
a server's collections need, with the collections, counts and aliases around them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from citadel.errors import CitadelError
from citadel.settings import masked_url
from citadel.store.rest import COUNT_EXACT, alias_map, collection_names, collection_path, point_count, rest_options


class ServerError(CitadelError):
    """The Qdrant server refused a call (``status`` is its HTTP status) or could not be reached (None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerSnapshots:
    """The REST calls of Qdrant's API around snapshots: collections, counts, snapshots, aliases."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float = 600) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, **rest_options(url, api_key, timeout_s))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ServerSnapshots:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _result(self, response: httpx.Response) -> Any:
        if response.is_error:
            try:
                reason = response.json()["status"]["error"]
            except (ValueError, KeyError, TypeError):
                reason = response.text[:200] or response.reason_phrase
            raise ServerError(
                f"the Qdrant server at {masked_url(self.url)} answered {response.request.method} {response.request.url.path} "
                f"with {response.status_code}: {reason}",
                response.status_code,
            )
        return response.json() if response.content else None

    def _unreachable(self, exc: httpx.HTTPError) -> ServerError:
        return ServerError(f"cannot reach the Qdrant server at {masked_url(self.url)} ({exc}); start it or fix CITADEL_QDRANT_URL")

    def _answer(self, method: str, path: str, **kwargs: Any) -> Any:
        """The whole JSON answer of a call (None for an empty one)."""
        try:
            return self._result(self.client.request(method, path, **kwargs))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The ``result`` of a call."""
        answer = self._answer(method, path, **kwargs)
        return answer["result"] if answer is not None else None

    def version(self) -> str:
        try:
            answer = self.client.get("/")
            return "qdrant " + str(answer.json().get("version", "?")) if answer.is_success else "qdrant (version not told)"
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        except ValueError:
            return "qdrant (version not told)"

    def collections(self) -> list[str]:
        return sorted(collection_names(self._answer("GET", "/collections")))

    def aliases(self) -> dict[str, str]:
        return alias_map(self._answer("GET", "/aliases"))

    def count(self, name: str) -> int:
        return point_count(self._answer("POST", f"{collection_path(name)}/points/count", json=COUNT_EXACT))

    def delete_collection(self, name: str) -> None:
        self.call("DELETE", collection_path(name))

    def download_snapshot(self, name: str, target: Path) -> str | None:
        """Have the server snapshot ``name``, save it to ``target`` and delete it from the server;
        the SHA-256 the server gives for it (to check the download against), if any."""
        base = f"{collection_path(name)}/snapshots"
        created = self.call("POST", base, params={"wait": "true"})
        snapshot = str(created["name"])
        try:
            with self.client.stream("GET", f"{base}/{quote(snapshot, safe='')}") as response:
                if response.is_error:
                    response.read()
                    self._result(response)
                with open(target, "wb") as handle:
                    for block in response.iter_bytes(1 << 20):
                        handle.write(block)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        finally:
            self.call("DELETE", f"{base}/{quote(snapshot, safe='')}", params={"wait": "true"})
        checksum = created.get("checksum")
        return checksum.lower() if isinstance(checksum, str) and checksum else None

    def upload_snapshot(self, name: str, source: Path, sha256: str) -> None:
        """Recover collection ``name`` from a snapshot file, which the server checks against
        ``sha256``; then delete the copy Qdrant keeps of an uploaded snapshot."""
        base = f"{collection_path(name)}/snapshots"
        uploaded = f"citadel-restore-{uuid.uuid4().hex[:12]}.snapshot"  # a name no snapshot of the server has
        with open(source, "rb") as handle:
            self.call(
                "POST", f"{base}/upload",
                params={"priority": "snapshot", "wait": "true", "checksum": sha256},
                files={"snapshot": (uploaded, handle, "application/octet-stream")},
            )
        try:
            self.call("DELETE", f"{base}/{uploaded}", params={"wait": "true"})
        except ServerError as exc:
            raise ServerError(
                f"collection {name} was restored, but the server kept the uploaded snapshot {uploaded}: {exc}; "
                f"delete it with DELETE /collections/{name}/snapshots/{uploaded} to free its disk space"
            ) from exc

    def set_aliases(self, aliases: Mapping[str, str]) -> None:
        """Make the server's aliases named in ``aliases`` point where they say."""
        existing = self.aliases()
        actions: list[dict[str, Any]] = [{"delete_alias": {"alias_name": alias}} for alias in aliases if alias in existing]
        actions += [{"create_alias": {"alias_name": alias, "collection_name": name}} for alias, name in aliases.items()]
        if actions:
            self.call("POST", "/collections/aliases", json={"actions": actions})
