"""The command-line entry points behind the thin scripts in ``scripts/``."""
