"""The `irli` command's cyclopts App: its commands, in the order `irli
--help` lists them. Each command is a function whose signature is its
options and whose docstring is its help (cyclopts reads both); they live
in modules by job:

  indexing    build, add, remove, compact, shard   (write an index)
  querying    search, eval                         (read one, of any kind)
  info        info
  serve       serve
  demo        demo                                 (GloVe, end to end)
"""

from __future__ import annotations

from cyclopts import App, Group

from ..version import __version__
from .demo import demo
from .indexing import add, build, compact, remove, shard
from .info import info
from .querying import eval_, search
from .serve import serve

app = App(
    name="irli",
    help="Learning to index: learned partitions and routing for nearest-neighbour search.\n\n"
         "Errors print one line, 'irli: error: ...', and exit with status 1 (2 for a bad command line).",
    version=f"irli {__version__}",
    version_format="plaintext",
    group_commands=Group("Commands", sort_key=0),
    group_arguments=Group("Arguments", sort_key=1),
    group_parameters=Group("Options", sort_key=2),
    result_action="return_value",
    suppress_keyboard_interrupt=False,
)

COMMANDS = {"build": build, "search": search, "eval": eval_, "info": info, "add": add, "remove": remove,
            "compact": compact, "shard": shard, "serve": serve, "demo": demo}
for order, (name, command) in enumerate(COMMANDS.items()):
    app.command(command, name=name, sort_key=order)
