"""Prefect tasks: thin wrappers over the core that add retries, caching choices and logging."""
