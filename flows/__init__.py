"""Prefect flows: each composes tasks into one workflow, one flow per module.

Importing this package first sets Prefect's embedded defaults for an offline machine (no
analytics), unless the environment says otherwise.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tasks.logcontext import configure_run_logging  # noqa: E402 - after the defaults it depends on

configure_run_logging()
