"""Who holds the embedding backend's slots, and giving back the slots of holders that are gone.

Prefect keeps a slot's lease in its server's memory and its count in the database. A holder that
is killed keeps its slot until the lease ends (minutes), a lease lost with a restarted server
never ends, and a run cancelled while asking may be granted a slot nobody gives back. So each
slot Citadel holds is also written down where every holder of the limit can read it, as a Prefect
variable (``citadel-slot-<lease>``, tagged with the limit): its process (host, boot, pid and start
time) and flow run. A run that waits for a slot reads them, gives back the slots of holders that
are gone (a dead process, a final flow run, a silent holder), and the count that no live holder
explains; ``citadel doctor`` shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psutil
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import VariableCreate, VariableUpdate
from prefect.client.schemas.filters import VariableFilter, VariableFilterTags
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError

from citadel.models import DoctorCheck
from citadel.registry import process_alive, utcnow

log = logging.getLogger(__name__)

LEDGER_TAG = "citadel-slot"
LEASE_S = 120.0
"""A slot's lease on the Prefect server; its holder renews it (and its record) every quarter of it."""

SILENT_AFTER_S = 3 * LEASE_S
"""A holder that has not renewed its record for this long is gone, whatever host it ran on."""

ORPHAN_GRACE_S = 330.0
"""Slots counted by the server that no recorded holder explains (a holder outside Citadel, or one
killed between its grant and its record) are given back once this has passed: longer than any
lease (Prefect's default is 300 s), so a slot that still has a lease is given back by its expiry,
never twice."""

ENDED_RUN_GRACE_S = 10.0
"""A holder whose flow run ended this long ago is gone: before, it may still be giving its slot back."""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


HOST = socket.gethostname()
BOOT_ID = _boot_id()


def _process_started(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


@dataclass(frozen=True)
class SlotHolder:
    """One held slot of a limit: its lease, and the process and flow run that hold it."""

    limit: str
    lease_id: str
    host: str
    boot_id: str
    pid: int
    process_started: float
    flow_run_id: str | None
    flow_run_name: str | None
    since: dt.datetime
    renewed: dt.datetime

    @property
    def variable(self) -> str:
        return f"citadel-slot-{self.lease_id}"

    def as_value(self) -> dict[str, Any]:
        return {
            "limit": self.limit, "lease_id": self.lease_id, "host": self.host, "boot_id": self.boot_id, "pid": self.pid,
            "process_started": self.process_started, "flow_run_id": self.flow_run_id, "flow_run_name": self.flow_run_name,
            "since": self.since.isoformat(), "renewed": self.renewed.isoformat(),
        }

    @classmethod
    def from_value(cls, value: Any) -> SlotHolder | None:
        """The holder a variable describes, or None when it is not one of ours (or unreadable)."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                limit=str(value["limit"]), lease_id=str(uuid.UUID(str(value["lease_id"]))), host=str(value["host"]),
                boot_id=str(value.get("boot_id") or ""), pid=int(value["pid"]), process_started=float(value.get("process_started") or 0),
                flow_run_id=value.get("flow_run_id"), flow_run_name=value.get("flow_run_name"),
                since=dt.datetime.fromisoformat(value["since"]), renewed=dt.datetime.fromisoformat(value["renewed"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        """``flow run index-docs (pid 123 on host-a), for 12 s``."""
        run = f"flow run {self.flow_run_name or self.flow_run_id}" if self.flow_run_id else "a process"
        held = max(0.0, (utcnow() - self.since).total_seconds())
        return f"{run} (pid {self.pid} on {self.host}), for {held:.0f} s"


def this_holder(limit: str, lease_id: uuid.UUID, flow_run_id: str | None, flow_run_name: str | None) -> SlotHolder:
    """The record of a slot this process was just granted."""
    now = utcnow()
    pid = os.getpid()
    return SlotHolder(limit, str(lease_id), HOST, BOOT_ID, pid, _process_started(pid), flow_run_id, flow_run_name, now, now)


async def write_holder(client: PrefectClient, holder: SlotHolder) -> None:
    await client.create_variable(VariableCreate(name=holder.variable, value=holder.as_value(), tags=[LEDGER_TAG, holder.limit]))


async def touch_holder(client: PrefectClient, holder: SlotHolder) -> None:
    """Say the holder is still alive (its record's ``renewed``), whatever became of its lease."""
    value = {**holder.as_value(), "renewed": utcnow().isoformat()}
    try:
        await client.update_variable(VariableUpdate(name=holder.variable, value=value))
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:  # given back meanwhile
            raise


async def forget_holder(client: PrefectClient, lease_id: str) -> None:
    with contextlib.suppress(ObjectNotFound):
        await client.delete_variable_by_name(f"citadel-slot-{lease_id}")


async def read_holders(client: PrefectClient, limit: str) -> list[SlotHolder]:
    """Every recorded holder of ``limit``."""
    response = await client.request(
        "POST", "/variables/filter",
        json={"variables": VariableFilter(tags=VariableFilterTags(all_=[LEDGER_TAG, limit])).model_dump(mode="json", exclude_unset=True),
              "limit": 200},
    )
    holders = [SlotHolder.from_value(item.get("value")) for item in response.json()]
    return [holder for holder in holders if holder is not None and holder.limit == limit]


async def why_gone(client: PrefectClient, holder: SlotHolder) -> str | None:
    """Why ``holder`` no longer holds its slot (its process is gone, its flow run ended, it fell
    silent), or None while it may still hold it."""
    here = holder.host == HOST and holder.boot_id == BOOT_ID
    if here:
        if not process_alive(holder.pid):
            return f"its process {holder.pid} on {holder.host} is gone"
        started = _process_started(holder.pid)
        if holder.process_started and started and abs(started - holder.process_started) > 1.0:
            return f"its process {holder.pid} on {holder.host} is gone (the pid is another process's now)"
    elif holder.host == HOST and holder.boot_id and BOOT_ID:
        return f"{holder.host} restarted since it took the slot"
    if holder.flow_run_id:
        try:
            flow_run = await client.read_flow_run(uuid.UUID(holder.flow_run_id))
        except (ObjectNotFound, ValueError):
            return f"its flow run {holder.flow_run_id} no longer exists"
        state = flow_run.state
        if state is not None and state.is_final() and (utcnow() - state.timestamp).total_seconds() > ENDED_RUN_GRACE_S:
            return f"its flow run {flow_run.name} is {state.name}"
    if here:
        return None  # its process runs: silence (a Prefect API it cannot reach) is no sign of its end
    silent = (utcnow() - holder.renewed).total_seconds()
    if silent > SILENT_AFTER_S:
        return f"it has not renewed its slot for {silent:.0f} s"
    return None


async def renew_lease(client: PrefectClient, lease_id: str) -> bool:
    """Renew a lease for :data:`LEASE_S`; False when the server no longer knows it (renewing is the
    one way its API tells whether it does)."""
    try:
        await client.renew_concurrency_lease(uuid.UUID(lease_id), LEASE_S)
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code in (404, 410):
            return False
        raise
    return True


RECLAIM_CLAIM_STALE_S = 30.0
"""A claim to reclaim a limit's slots older than this is a waiter's that died mid-way: taken over."""

CONFIRM_AFTER_S = 0.3
"""Slots no live holder explains are counted twice this far apart, and only what both counts show
is given back: a slot being granted or given back is counted before its record is written or
after it is removed, for milliseconds."""


async def _claim(client: PrefectClient, limit: str) -> uuid.UUID | None:
    """One waiter at a time reclaims a limit's slots (two would give back the same slot twice): a
    claim variable that the server refuses to create twice; None when another waiter holds it."""
    name = f"citadel-slot-reclaim-{limit}"
    for _ in range(2):
        try:
            variable = await client.create_variable(
                VariableCreate(name=name, value={"host": HOST, "pid": os.getpid(), "at": utcnow().isoformat()}, tags=[LEDGER_TAG])
            )
            return variable.id
        except ObjectAlreadyExists:
            held = await client.read_variable_by_name(name)
            if held is None:
                continue  # given up meanwhile: ask again
            at = held.value.get("at") if isinstance(held.value, dict) else None
            try:
                fresh = at is not None and (utcnow() - dt.datetime.fromisoformat(str(at))).total_seconds() < RECLAIM_CLAIM_STALE_S
            except ValueError:
                fresh = False
            if fresh:
                return None
            # By its id, so that of two waiters taking over the same stale claim only one removes it.
            with contextlib.suppress(PrefectHTTPStatusError):
                await client.request("DELETE", "/variables/{id}", path_params={"id": held.id})
    return None


async def _unclaim(client: PrefectClient, claim: uuid.UUID) -> None:
    with contextlib.suppress(PrefectHTTPStatusError):
        await client.request("DELETE", "/variables/{id}", path_params={"id": claim})


async def _take_record(client: PrefectClient, holder: SlotHolder) -> bool:
    """Remove a gone holder's record; False when it was already gone (someone else gives it back)."""
    try:
        await client.delete_variable_by_name(holder.variable)
    except ObjectNotFound:
        return False
    return True


@dataclass
class Reclaimer:
    """What a run waiting for a slot of ``limit`` gives back, and what it has seen of the holders."""

    limit: str
    orphans_since: float | None = None
    holders: tuple[SlotHolder, ...] = ()
    active: int = 0
    size: int = 0

    async def _unexplained(self, client: PrefectClient, judged: dict[str, str | None]) -> int:
        """Slots the server counts beyond the recorded live holders (the count is read first, so a
        holder granted meanwhile is in the records and not the count: never too many). ``judged``
        holds why each holder seen in this reclaim is gone (None: live), so none is asked twice."""
        limit = await client.read_global_concurrency_limit_by_name(self.limit)
        live = []
        for holder in await read_holders(client, self.limit):
            if holder.lease_id not in judged:
                judged[holder.lease_id] = await why_gone(client, holder)
            if judged[holder.lease_id] is None:
                live.append(holder)
        self.holders, self.active, self.size = tuple(live), limit.active_slots, limit.limit
        return limit.active_slots - len(live)

    async def reclaim(self, client: PrefectClient) -> list[str]:
        """Give back the slots of holders that are gone, and slots no live holder explains; returns
        what was given back, each with its reason. Nothing while another waiter is at it."""
        claim = await _claim(client, self.limit)
        if claim is None:
            return []
        try:
            return await self._reclaim(client)
        finally:
            await _unclaim(client, claim)

    async def _reclaim(self, client: PrefectClient) -> list[str]:
        given: list[str] = []
        lost_leases = 0
        judged: dict[str, str | None] = {}
        for holder in await read_holders(client, self.limit):
            reason = judged[holder.lease_id] = await why_gone(client, holder)
            if reason is None or not await _take_record(client, holder):
                continue
            if await renew_lease(client, holder.lease_id):
                await client.release_concurrency_slots_with_lease(uuid.UUID(holder.lease_id))
            else:
                lost_leases += 1  # ended on its own (and counted no more) or lost with a restarted server: the count tells
            given.append(f"the slot of {holder.describe()}: {reason}")
        surplus = await self._unexplained(client, judged)
        if surplus > 0:
            await asyncio.sleep(CONFIRM_AFTER_S)
            surplus = min(surplus, await self._unexplained(client, judged))
        if surplus <= 0:
            self.orphans_since = None
            return given
        now = time.monotonic()
        self.orphans_since = self.orphans_since or now
        # A gone holder's lease that no longer exists but is still counted was lost with its
        # server: give it back at once. Any other surplus only after the grace period, longer than
        # any lease, so that a slot with a lease is given back by the server first.
        free = surplus if now - self.orphans_since >= ORPHAN_GRACE_S else min(surplus, lost_leases)
        if free:
            await client.request("POST", "/v2/concurrency_limits/decrement", json={"names": [self.limit], "slots": free})
            given.append(f"{free} slot(s) counted by the server that no live holder explains")
            self.active -= free
            if free == surplus:
                self.orphans_since = None
        return given


async def slot_report(client: PrefectClient, limit: str) -> tuple[int, int, list[tuple[SlotHolder, str | None]]]:
    """The limit's size, its slots in use, and every recorded holder with why it is gone (None: live)."""
    found = await client.read_global_concurrency_limit_by_name(limit)
    holders = await read_holders(client, limit)
    return found.limit, found.active_slots, [(holder, await why_gone(client, holder)) for holder in holders]


async def slot_check(client: PrefectClient, limit: str) -> DoctorCheck:
    """``citadel doctor``'s line for the limit: slots in use, each holder, and those that are gone."""
    try:
        size, active, holders = await slot_report(client, limit)
    except ObjectNotFound:
        return DoctorCheck(name="embedding slots", ok=True, detail=f"no limit {limit!r} yet: the first run that embeds creates it")
    live = [holder.describe() for holder, gone in holders if gone is None]
    gone = [f"{holder.describe()}, gone: {reason}" for holder, reason in holders if reason is not None]
    unexplained = max(0, active - len(holders))
    detail = f"{active} of {size} slots of {limit!r} in use" + (f", held by {'; '.join(live)}" if live else "")
    if gone:
        detail += f"; {len(gone)} held by holders that are gone ({'; '.join(gone)})"
    if unexplained:
        detail += f"; {unexplained} counted with no recorded holder (a lease lost with a restarted server, or a holder outside Citadel)"
    return DoctorCheck(
        name="embedding slots", ok=not gone and not unexplained, detail=detail,
        fix="" if not gone and not unexplained else "nothing to do by hand: the next run that waits for a slot gives these back",
    )
