"""The label index for extreme classification: `LabelIndex` (its model is
irli.model.labels, its kernel irli.kernels.label_predict) and the XC data
formats."""

from .index import LabelIndex

__all__ = ["LabelIndex"]
