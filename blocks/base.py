"""What every Citadel block shares: building its core object and configuring a run's Settings."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import ConfigDict, model_validator

from citadel.settings import Settings, masked_url  # noqa: F401 - re-exported for the blocks


class CitadelBlock(Block, ABC):
    """Base of the Citadel blocks; abstract, so ``prefect block register`` skips it."""

    # Validation errors must never echo a secret (a URL with a password, an API key) back.
    model_config: ClassVar[ConfigDict] = ConfigDict(hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _warn_unknown_fields(cls, values: Any) -> Any:
        """Prefect blocks accept any extra keyword, so a misspelt field would be dropped without a word."""
        if isinstance(values, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = sorted(k for k in values if k not in known and k != "block_type_slug" and not k.startswith("_"))
            if unknown:
                warnings.warn(
                    f"{cls.__name__} ignores unknown field(s) {', '.join(unknown)}; "
                    f"its fields are {', '.join(cls.model_fields)}",
                    UserWarning,
                    stacklevel=2,
                )
        return values

    @abstractmethod
    def build(self) -> Any:
        """The Citadel core object this block configures."""

    @abstractmethod
    def settings_overrides(self) -> dict[str, Any]:
        """The Citadel :class:`Settings` fields this block sets, for ``Settings(**overrides)``."""


def settings_from_blocks(*blocks: CitadelBlock, **overrides: Any) -> Settings:
    """Settings from the environment, then each block's overrides in order, then explicit ``overrides``."""
    merged: dict[str, Any] = {}
    for block in blocks:
        merged.update(block.settings_overrides())
    merged.update(overrides)
    return Settings(**merged)


def url_scheme(url: str) -> str:
    """The scheme of ``url`` (lower case), or an empty string when it has none."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""
