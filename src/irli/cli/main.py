"""The `irli` command's entry point: `main(argv)` runs it and returns the
exit status; bad input ends with one line on stderr, never a traceback.

  irli build VECTORS -o DIR      build an index directory from a vectors file, or a
                                 label index from an extreme-classification file
  irli search DIR QUERIES        top-k ids and scores (.npy files, or printed)
  irli eval DIR QUERIES          recall@k, candidates and QPS over a sweep of probes;
                                 for a label index, P@k, nDCG@k, PSP@k on an XC-format file
  irli add DIR VECTORS           add items (saved in place); remove DIR IDS; compact DIR
  irli info DIR                  what an index directory holds
  irli shard DIR OUT --shards S  split an index into S self-contained parts
  irli serve DIR                 serve an index over HTTP (see irli.serving)
  irli demo                      GloVe: build irli and ivf, compare, show word neighbours

The commands are in irli.cli.app. Exit status: 0, 1 for an error ("irli:
error: ..."), 2 for a command line cyclopts cannot read (an unknown option,
a value of the wrong type, a missing argument), 130 when interrupted.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from cyclopts import CycloptsError
from cyclopts.exceptions import ValidationError

from .app import COMMANDS, app


def _one_line(e: BaseException) -> str:
    if isinstance(e, ValidationError) and e.argument is not None and e.argument.tokens and e.exception_message:
        token = e.argument.tokens[0]  # "--threads: must be a positive integer, got 0"
        text = f"{token.keyword or e.argument.name}: {e.exception_message}"
    else:
        text = str(e)
    return " ".join(text.split()) or type(e).__name__


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's
    final flush does not report the pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - stdout already gone
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run `irli` on `argv` (default: the process's arguments); the exit status."""
    from ..errors import IrliError

    args = sys.argv[1:] if argv is None else argv
    tokens = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    try:
        if not tokens:  # no command: the overview, as a usage error
            app.help_print([])
            return 2
        result = app(tokens, exit_on_error=False, print_error=False)
        return 0 if result is None else int(result)  # None: --help or --version
    except CycloptsError as e:  # the command line itself
        where = f"irli {tokens[0]}" if tokens[0] in COMMANDS else "irli"
        print(f"irli: error: {_one_line(e)} (see {where} --help)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like; before OSError, its base
        _quiet_stdout()
        return 0
    except (IrliError, OSError, ValueError, MemoryError) as e:
        print(f"irli: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("irli: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
