"""The HTTP service of the platform's ``/api/v1`` contract: FastAPI over the core and the workflow-run module."""
