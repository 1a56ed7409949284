"""Exceptions irli raises for bad input and bad state.

Every error carries a one-line message that names the problem, so the CLI can
print it as is.
"""


class IrliError(Exception):
    """Base class of every error irli raises on purpose."""


class InvalidInputError(IrliError, ValueError):
    """Data or arguments a call cannot use: wrong shape, dtype, NaN, range."""


class ConfigError(IrliError, ValueError):
    """An unknown preset, option or metric, or an option value out of range."""


class NotFittedError(IrliError, AttributeError):
    """A method that needs a fitted index was called before `fit`."""


class IndexFormatError(IrliError, OSError):
    """An index directory that is missing, truncated, corrupted or not irli's."""


class SaveError(IrliError, OSError):
    """A save that could not be completed (disk full, no permission): the
    message names the path and the cause; nothing at the path changed."""


class IndexLockedError(IrliError, OSError):
    """An index directory another writer holds (see irli.io.locks.WriterLock)."""
