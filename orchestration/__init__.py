"""The service layer over a Prefect server, shared by the CLI and the HTTP API: starting, reading
and cancelling workflow runs (``workflow_runs``) and the flow-run metrics read from its API
(``prefect_metrics``). Above the deployments and flows it starts, below the callers."""
