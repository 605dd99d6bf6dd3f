"""Log lines of flow runs: Prefect's run ids on Citadel's lines, and ``CITADEL_LOG_FORMAT=json``
applied to what a run process prints. Prefect's handler that ships run logs to its API (and so to
the UI) is left as it is."""

from __future__ import annotations

import os

from citadel import logs


def prefect_run_ids() -> dict[str, str]:
    """The flow run and task run this line is logged in, when in one."""
    from prefect.context import FlowRunContext, TaskRunContext

    ids: dict[str, str] = {}
    flow_run = FlowRunContext.get()
    if flow_run is not None and flow_run.flow_run is not None:
        ids["flow_run_id"] = str(flow_run.flow_run.id)
    task_run = TaskRunContext.get()
    if task_run is not None:
        ids["task_run_id"] = str(task_run.task_run.id)
    return ids


def configure_run_logging() -> None:
    """Once per process that runs flows: ids on every line, and the format the environment asks."""
    logs.add_context(prefect_run_ids)
    if logs.requested_format() == "json":
        from prefect.logging import configuration

        if not configuration.PROCESS_LOGGING_CONFIG:  # Prefect's handlers first (it would set them up on first use)
            configuration.setup_logging()
        logs.configure("json", os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"), ("citadel", "tasks", "flows"))
        logs.reformat_handlers("json", ("", "prefect", "uvicorn"))
