"""The `irli` command (`main`, the cyclopts `app`), the GloVe demo, progress
bars and timed evaluation sweeps: front ends of the library, which never
imports them."""

from .app import app
from .main import main

__all__ = ["app", "main"]
