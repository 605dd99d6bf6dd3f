"""Prefect flows: each composes tasks into one workflow, one flow per module."""
