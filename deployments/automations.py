"""Citadel's automations (deployments/automations.yaml) on a Prefect server, for ``citadel setup``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import PrefectClient
from prefect.events.schemas.automations import AutomationCore
from prefect.exceptions import ObjectNotFound

from citadel.errors import ConfigurationError

AUTOMATIONS_FILE = Path(__file__).with_name("automations.yaml")
NOTIFY_BLOCK = "NOTIFY_BLOCK"
"""The placeholder in the file for the id of the notification block that ``--notify`` names."""


def declared(path: Path = AUTOMATIONS_FILE) -> list[dict[str, Any]]:
    """The automations the file declares, as Prefect reads them (placeholders left in)."""
    automations: list[dict[str, Any]] = yaml.safe_load(path.read_text())["automations"]
    return automations


def needs_block(automation: dict[str, Any]) -> bool:
    return any(action.get("block_document_id") == NOTIFY_BLOCK for action in automation.get("actions", []))


async def notification_block_id(client: PrefectClient, notify: str) -> str:
    """The id of the block ``notify`` names (``slack-webhook/ops``), or a configuration error."""
    block_type, _, name = notify.partition("/")
    if not block_type or not name:
        raise ConfigurationError(f"--notify takes BLOCK_TYPE/NAME (such as slack-webhook/ops), not {notify!r}")
    try:
        block = await client.read_block_document_by_name(name, block_type)
    except ObjectNotFound:
        raise ConfigurationError(
            f"no notification block {notify!r} on the Prefect server: create it in the UI (Blocks), then run setup again"
        ) from None
    return str(block.id)


async def install_automations(client: PrefectClient, notify: str | None) -> list[str]:
    """Create (or replace, by name) each declared automation; those that notify are created, enabled,
    only with a notification block. Returns what was done, a line each."""
    block_id = await notification_block_id(client, notify) if notify else None
    actions = []
    for automation in declared():
        name = automation["name"]
        if needs_block(automation) and block_id is None:
            actions.append(f"automation {name!r} not created: it notifies, so give it a block (citadel setup --notify slack-webhook/ops)")
            continue
        spec = {**automation, "enabled": True, "actions": [
            {**action, "block_document_id": block_id} if action.get("block_document_id") == NOTIFY_BLOCK else action
            for action in automation["actions"]
        ]}
        for existing in await client.read_automations_by_name(name):
            await client.delete_automation(existing.id)
        await client.create_automation(AutomationCore.model_validate(spec))
        actions.append(f"automation {name!r} is in place" + (f", notifying through {notify}" if block_id else ""))
    return actions
