"""The label index for extreme classification: `LabelIndex`, its model and
compiled prediction, and the XC data formats."""

from .index import LabelIndex

__all__ = ["LabelIndex"]
