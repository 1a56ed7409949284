"""The `irli` command (`main`), the GloVe demo, progress bars and timed
evaluation sweeps: front ends of the library, which never imports them."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
