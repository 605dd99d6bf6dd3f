"""Flow-run and worker metrics read from the Prefect API at scrape time.

Counters where a terminal state is concerned: runs that ended Completed, Failed, Crashed or
Cancelled, per deployment, counted once from Prefect's own counts when this process first asks,
then advanced by reading only the runs that ended since the last scrape. Gauges for what is
happening now: runs due, late, pending, running, paused or cancelling, and each work pool's
readiness and live workers. Labels name deployments and work pools, never a run: a deployment is
``flow/deployment`` as Prefect names it (four deployments are called ``default``), and runs started
without one (subflows, the CLI's) are ``flow/adhoc``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from typing import Any

import httpx
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
ACTIVE = ("PENDING", "RUNNING", "PAUSED", "CANCELLING")
NOW_STATES = ("Scheduled", "Late", "Pending", "Running", "Paused", "Cancelling")
ADHOC = "adhoc"  # the deployment part of the label of runs started without a deployment: flow/adhoc
PAGE = 200
SEED_CONCURRENCY = 8  # counts asked of Prefect at once on the first scrape (4 per deployment and per flow)
LAG = dt.timedelta(seconds=10)
"""Runs that ended this long before the newest end seen are read again (and recognised by id): a run
whose end was committed late is still counted once."""


def _title(state_type: str) -> str:
    return state_type.capitalize()


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class PrefectFigures:
    """The Prefect part of a scrape, kept between scrapes for the counters' progress."""

    def __init__(self, api_url: str, *, timeout_s: float = 5.0, cache_s: float = 5.0) -> None:
        headers: dict[str, str] = {}
        if PREFECT_API_KEY.value():
            headers["Authorization"] = f"Bearer {PREFECT_API_KEY.value().get_secret_value()}"
        auth = PREFECT_API_AUTH_STRING.value()
        user, _, password = auth.get_secret_value().partition(":") if auth else ("", "", "")
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/") + "/", timeout=timeout_s, headers=headers, auth=(user, password) if auth else None
        )
        self.cache_s = cache_s
        self._finished: dict[tuple[str, str], int] | None = None
        self._watermark: dt.datetime | None = None
        self._recent: dict[str, dt.datetime] = {}  # runs read near the watermark, by id, not to count twice
        self._deployments: dict[str, str] = {}  # id -> flow/deployment
        self._flows: dict[str, str] = {}  # id -> flow name
        self._last: tuple[float, list[Metric]] | None = None
        self._lock = asyncio.Lock()

    @property
    def _adhoc_flows(self) -> list[str]:
        """The flows that ran without a deployment: their ``flow/adhoc`` series start at zero once seen."""
        return sorted({name.removesuffix(f"/{ADHOC}") for name, _ in (self._finished or {}) if name.endswith(f"/{ADHOC}")})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    async def _all(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item a filter endpoint has for ``body``, a page of PAGE at a time."""
        items: list[dict[str, Any]] = []
        while True:
            page = await self._post(path, {**body, "limit": PAGE, "offset": len(items)})
            items.extend(page)
            if len(page) < PAGE:
                return items

    async def families(self) -> list[Metric]:
        """The figures, at most ``cache_s`` old; ``citadel_prefect_up`` is 0 when Prefect did not answer."""
        async with self._lock:
            if self._last and time.monotonic() - self._last[0] < self.cache_s:
                return self._last[1]
            up = GaugeMetricFamily("citadel_prefect_up", "Whether the Prefect API answered this scrape.")
            try:
                found = await self._collect()
            except (httpx.HTTPError, ValueError, KeyError):
                up.add_metric([], 0)
                found = []
            else:
                up.add_metric([], 1)
            self._last = (time.monotonic(), [up, *found])
            return self._last[1]

    async def _collect(self) -> list[Metric]:
        await self._read_deployments()
        if self._finished is None:
            await self._seed()
        else:
            await self._advance()
        finished = CounterMetricFamily("citadel_prefect_flow_runs_finished", "Flow runs that reached a terminal state.",
                                       labels=["deployment", "state"])
        # Every deployment with every state, zeros included: a series that exists from the start
        # makes increase() and the dashboards right on the first run.
        known = {(name, _title(state)): 0 for name in self._deployments.values() for state in TERMINAL}
        known.update({(f"{flow}/{ADHOC}", _title(state)): 0 for flow in self._adhoc_flows for state in TERMINAL})
        for (deployment, state), count in sorted({**known, **(self._finished or {})}.items()):
            finished.add_metric([deployment, state], count)
        return [finished, await self._now(), *await self._pools()]

    async def _read_deployments(self) -> None:
        """The flows' names and every deployment as ``flow/deployment``."""
        self._flows.update({f["id"]: f["name"] for f in await self._all("flows/filter", {})})
        self._deployments.update({
            d["id"]: f"{self._flows.get(d['flow_id'], 'unknown')}/{d['name']}" for d in await self._all("deployments/filter", {})
        })

    async def _know_flows(self, runs: list[dict[str, Any]]) -> None:
        """Read the flows again when a run names one created since they were read."""
        if any(run.get("flow_id") and run["flow_id"] not in self._flows for run in runs):
            await self._read_deployments()

    def _deployment(self, run: dict[str, Any]) -> str:
        """A run's label: its deployment's, ``flow/adhoc`` without one, ``flow/deleted`` for a deployment gone."""
        flow = self._flows.get(run.get("flow_id") or "", "unknown")
        deployment_id = run.get("deployment_id")
        if deployment_id is None:
            return f"{flow}/{ADHOC}"
        return self._deployments.get(deployment_id, f"{flow}/deleted")

    async def _seed(self) -> None:
        """Prefect's counts of every run that ended before now: one count per deployment and state."""
        now = dt.datetime.now(dt.UTC)
        finished: dict[tuple[str, str], int] = defaultdict(int)
        targets: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            (name, {"any_": [i]}, {}) for i, name in self._deployments.items()
        ]
        targets += [(f"{flow}/{ADHOC}", {"is_null_": True}, {"id": {"any_": [i]}}) for i, flow in self._flows.items()]

        gate = asyncio.Semaphore(SEED_CONCURRENCY)

        async def count(name: str, deployment: dict[str, Any], flows: dict[str, Any], state: str) -> None:
            body: dict[str, Any] = {"flow_runs": {"state": {"type": {"any_": [state]}}, "end_time": {"before_": now.isoformat()},
                                                  "deployment_id": deployment}}
            if flows:
                body["flows"] = flows
            async with gate:
                finished[name, _title(state)] += int(await self._post("flow_runs/count", body))

        await asyncio.gather(*(count(name, deployment, flows, state) for name, deployment, flows in targets for state in TERMINAL))
        self._finished = {key: value for key, value in finished.items() if value}
        self._watermark = now
        # What those counts already hold, so that the next scrape, reading back LAG, skips it.
        self._recent = {run["id"]: ended for run in await self._ended_since(now - LAG) if (ended := _parse(run["end_time"])) < now}

    async def _ended_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        """The runs that reached a terminal state at or after ``since``, newest first."""
        body = {"flow_runs": {"state": {"type": {"any_": list(TERMINAL)}}, "end_time": {"after_": since.isoformat()}},
                "sort": "END_TIME_DESC"}
        return [run for run in await self._all("flow_runs/filter", body) if run.get("end_time")]

    async def _advance(self) -> None:
        """Count the runs that ended since the last scrape (and the late commits of a little before)."""
        assert self._finished is not None and self._watermark is not None
        ended_runs = await self._ended_since(self._watermark - LAG)
        await self._know_flows(ended_runs)
        for run in ended_runs:
            if run["id"] in self._recent:
                continue
            ended = _parse(run["end_time"])
            self._recent[run["id"]] = ended
            key = (self._deployment(run), _title(run["state_type"]))
            self._finished[key] = self._finished.get(key, 0) + 1
            self._watermark = max(self._watermark, ended)
        self._recent = {run_id: ended for run_id, ended in self._recent.items() if ended >= self._watermark - 2 * LAG}

    async def _now(self) -> Metric:
        """Runs due and not finished, by state name (Late is a Scheduled run past its start)."""
        now = dt.datetime.now(dt.UTC).isoformat()
        active = {"flow_runs": {"state": {"type": {"any_": list(ACTIVE)}}}}
        due = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}, "expected_start_time": {"before_": now}}}
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for name in (*self._deployments.values(), *(f"{flow}/{ADHOC}" for flow in self._adhoc_flows)):
            for state in NOW_STATES:
                counts[name, state] = 0
        runs = [run for flow_filter in (active, due) for run in await self._all("flow_runs/filter", flow_filter)]
        await self._know_flows(runs)
        for run in runs:
            state = (run.get("state") or {}).get("name") or _title(run["state_type"])
            counts[self._deployment(run), state] += 1
        gauge = GaugeMetricFamily("citadel_prefect_flow_runs", "Flow runs due and not finished, by state.", labels=["deployment", "state"])
        for (deployment, state), count in sorted(counts.items()):
            gauge.add_metric([deployment, state], count)
        return gauge

    async def _pools(self) -> list[Metric]:
        ready = GaugeMetricFamily("citadel_prefect_work_pool_ready", "Whether a work pool is ready (has a live worker, not paused).",
                                  labels=["work_pool"])
        online = GaugeMetricFamily("citadel_prefect_workers_online", "Workers of a pool whose heartbeat is recent.", labels=["work_pool"])
        pools = await self._all("work_pools/filter", {})
        workers = await asyncio.gather(*(self._all(f"work_pools/{pool['name']}/workers/filter", {}) for pool in pools))
        for pool, members in zip(pools, workers, strict=True):
            ready.add_metric([pool["name"]], 1 if pool.get("status") == "READY" else 0)
            online.add_metric([pool["name"]], sum(worker.get("status") == "ONLINE" for worker in members))
        return [ready, online]
