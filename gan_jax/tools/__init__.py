"""Command-line and conversion tools (weight import, generation, ...)."""
