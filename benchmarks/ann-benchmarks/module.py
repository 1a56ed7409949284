"""ann-benchmarks entry point: the harness imports IrliANN from here."""

from irli.ann_benchmarks import IrliANN  # noqa: F401
