"""The ``citadel`` command line."""
