"""The one result type of every analysis: a tidy table (one row per site) and a figure.

``patch``, ``attribute``, ``probes.fit`` and ``codebook.analyze`` all return a ``Result``::

    >>> res = patch(model, clean, corrupted, metric, sites=Sites("steps.*.hook_input", positions="each"))
    >>> res.df.head()                 # site, hook, component, step, pos, head, metric, score
    >>> res.figure().show()           # step x position heatmap
    >>> res.to_csv("out/patch.csv"); res.to_html("out/patch.html")

``df`` has one row per site with identifying columns (``site``, ``hook``, ``component``,
one column per loop index such as ``step`` / ``layer``, ``pos``, ``head``) and value
columns; ``value`` names the column the figure shows by default. Analyses that produce
more than one table (the codebook report) keep the others in ``tables``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Result"]


@dataclass
class Result:
    kind: str  # "patch", "attribute", "probe", "codebook"
    df: pd.DataFrame  # one row per site
    value: str  # the column a figure shows by default
    meta: dict = field(default_factory=dict)  # baselines, settings, timings
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # further tidy tables

    def figure(self, value: str | None = None, **kwargs: Any):
        """A Plotly figure of the result (heatmap over step x layer / position, head grid, ...).

        ``value`` picks another column; codebook results take ``which=`` ("usage",
        "accuracy", "confusion", "pca", "fourier", "drift").
        """
        from workbench import figures

        return figures.for_result(self, value=value or self.value, **kwargs)

    def to_csv(self, path: str | Path, table: str | None = None) -> Path:
        """Write ``df`` (or ``tables[table]``) as CSV, atomically."""
        from workbench.checkpoints import atomic_write

        df = self.df if table is None else self.tables[table]
        atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
        return Path(path)

    def to_html(self, path: str | Path, **kwargs: Any) -> Path:
        """Write ``figure(**kwargs)`` as a standalone HTML page, atomically."""
        from workbench.checkpoints import atomic_write

        fig = self.figure(**kwargs)
        atomic_write(path, lambda tmp: fig.write_html(tmp, include_plotlyjs="cdn"))
        return Path(path)

    def save(self, folder: str | Path, stem: str | None = None) -> list[Path]:
        """CSV of ``df`` and of every extra table, plus the default figure as HTML."""
        folder, stem = Path(folder), stem or self.kind
        paths = [self.to_csv(folder / f"{stem}.csv"), self.to_html(folder / f"{stem}.html")]
        for name in self.tables:
            paths.append(self.to_csv(folder / f"{stem}_{name}.csv", table=name))
        return paths

    def top(self, k: int = 10, by: str | None = None) -> pd.DataFrame:
        """The ``k`` sites with the largest absolute ``by`` (default: ``value``)."""
        by = by or self.value
        return self.df.reindex(self.df[by].abs().sort_values(ascending=False).index).head(k)

    def __repr__(self) -> str:
        extra = f", tables={list(self.tables)}" if self.tables else ""
        return f"Result(kind={self.kind!r}, sites={len(self.df)}, value={self.value!r}{extra})"
