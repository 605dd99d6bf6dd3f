"""Which ``CITADEL_*`` variables exist: every setting of the core and of the HTTP service, and the
check that names a typo's closest real variable instead of letting it fall back to a default."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from citadel.apisettings import ApiSettings
from citadel.settings import Settings

# CITADEL_ variables that are not settings: read by the scripts, the CLI or the tests.
OTHER_VARIABLES = frozenset({"CITADEL_DEBUG", "CITADEL_VENV", "CITADEL_API_HOST", "CITADEL_API_PORT", "CITADEL_API_WORKERS"})
_OTHER_PREFIXES = ("CITADEL_TEST_",)


def setting_variables() -> list[str]:
    """Every ``CITADEL_*`` variable a setting reads (the core's and the HTTP service's)."""
    return sorted(f"CITADEL_{name.upper()}" for name in [*Settings.model_fields, *ApiSettings.model_fields])


def _closest(stem: str, stems: Mapping[str, str]) -> str | None:
    """The variable whose name (without its prefix) is most like ``stem``: a near spelling, or the
    one name that contains it (MODEL for EMBEDDING_MODEL)."""
    close = difflib.get_close_matches(stem, list(stems), n=1, cutoff=0.75)
    if close:
        return stems[close[0]]
    containing = [known for known in stems if len(stem) > 3 and stem in known]
    return stems[containing[0]] if len(containing) == 1 else None


def unknown_variables(environ: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = ".env") -> list[str]:
    """One warning per ``CITADEL_*`` variable (in the environment or the ``.env`` file) that no
    setting reads, naming the closest real one: a typo must not silently fall back to a default."""
    names = set(os.environ if environ is None else environ)
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        names.update(dotenv_values(env_file))
    known = setting_variables()
    # Compared without the prefix every name shares, which would make any two names look alike.
    stems = {name.removeprefix("CITADEL_"): name for name in [*known, *sorted(OTHER_VARIABLES)]}
    warnings: list[str] = []
    for name in sorted(n for n in names if n.upper().startswith("CITADEL_")):
        upper = name.upper()
        if upper in known or upper in OTHER_VARIABLES or upper.startswith(_OTHER_PREFIXES):
            continue
        closest = _closest(upper.removeprefix("CITADEL_"), stems)
        hint = f"did you mean {closest}?" if closest else "the README's configuration table lists every setting"
        warnings.append(f"{name} is not a Citadel setting and is ignored ({hint})")
    return warnings
