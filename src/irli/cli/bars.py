"""Progress bars for terminals: a `Progress` callback that draws one tqdm
bar per stage on stderr. The command line and the demo use it; the library
itself only reports (irli.progress)."""

from __future__ import annotations

import sys
from typing import Any


class Bars:
    """A progress callback drawing one tqdm bar per stage on stderr (only
    when stderr is a terminal)."""

    LABELS = {"kmeans": "k-means", "ground-truth": "ground truth", "train": "training",
              "repartition": "re-partition", "lists": "inverted lists", "search": "search"}

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(p.stage)
        if bar is None or bar.total != p.total or p.done < bar.n:
            if bar is not None:
                bar.close()
            bar = tqdm(total=p.total, desc=self.LABELS.get(p.stage, p.stage), unit="",
                       file=sys.stderr, leave=False, dynamic_ncols=True, disable=None)
            self.bars[p.stage] = bar
        bar.update(p.done - bar.n)
        shown = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in p.info.items() if v is not None}
        if shown:
            bar.set_postfix(shown, refresh=False)
        if p.done >= p.total:
            bar.close()
            del self.bars[p.stage]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
