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

A result says what it could not compute. Per-site analyses have a ``status`` column: ``"ok"``,
or why the row is not a measurement to rank (``"no gradient path"``, ``"integer activation"``,
``"no-op"``, ``"constant target"``, ...); ``counts()`` tallies them, ``top(k)`` ranks only the
``"ok"`` rows, and ``summary()`` is the text the command line and the app print::

    >>> print(res.summary())          # what was measured, what was left out and why, the top sites
    >>> res.top(10)                   # the 10 sites with the largest effect
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Result", "OK", "MEASURED", "EFFECT", "effect"]

OK = "ok"  # the status of a row that holds a measurement
# statuses whose value is still a measurement to draw (a no-op patch's metric is exact), though
# never ranked by ``top``; every other status marks a value that measures nothing
MEASURED = (OK, "no-op")

# What ``effect`` means for a normalised patching score (0 = as corrupted, 1 = as clean), per
# ablation: the share of the clean-vs-corrupted metric gap that the patch moves.
EFFECT = {
    None: "score: the share of the clean - corrupted metric gap that patching the clean activation "
          "into the corrupted run restores",
    "resample": "1 - score: the share of the gap that writing the corrupted activation into the clean run removes",
    "zero": "1 - score: the share of the gap that zeroing the activation in the clean run removes",
    "mean": "1 - score: the share of the gap that replacing the activation by its mean over the corrupted "
            "batch in the clean run removes",
}


def effect(score, ablation: str | None):
    """The effect of a patch from its normalised score (see ``EFFECT``): ``score`` when patching
    clean into corrupted, ``1 - score`` for ablations of the clean run."""
    if ablation not in EFFECT:
        raise ValueError(f"ablation={ablation!r}; allowed: {tuple(EFFECT)}")
    return score if ablation is None else 1.0 - score


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

    # ------------------------------------------------------------ reading
    @property
    def rank_by(self) -> tuple[str, bool]:
        """(column, by magnitude?) that ``top`` ranks on: the ``effect`` of a patch (largest
        |effect| first), a probe's ``value`` (largest first), else ``|value|``."""
        if self.kind in ("patch", "attribute") and "effect" in self.df:
            return "effect", True
        if self.kind == "probe":
            return self.value, False
        return self.value, True

    def top(self, k: int = 10, by: str | None = None) -> pd.DataFrame:
        """The ``k`` sites with the largest effect, among the rows that hold a measurement.

        Patching and attribution rank on ``|effect|`` (``effect`` = score when patching clean
        into corrupted, 1 - score for zero / mean / resample ablations of the clean run; see
        ``workbench.results.EFFECT``), probes on their ``value`` (selectivity), largest first.
        ``by`` ranks on another column instead (by magnitude, or largest first for probes).
        Rows whose ``status`` is not ``"ok"`` (no gradient path, no-op, constant target, ...)
        are never ranked; ``counts()`` says how many there are.
        """
        col, magnitude = self.rank_by
        if by is not None:
            col = by
        if col not in self.df:
            raise ValueError(f"column {col!r} is not in the result; columns: {list(self.df.columns)}")
        d = self.df if "status" not in self.df else self.df[self.df["status"] == OK]
        values = pd.to_numeric(d[col], errors="coerce").astype(float)
        d, values = d[np.isfinite(values)], values[np.isfinite(values)]
        key = values.abs() if magnitude else values
        return d.loc[key.sort_values(ascending=False, kind="stable").index].head(int(k))

    def best(self, by: str | None = None) -> pd.Series | None:
        """The first row of ``top(1, by)``, or None when no row holds a measurement."""
        t = self.top(1, by)
        return None if t.empty else t.iloc[0]

    def counts(self) -> dict[str, int]:
        """Rows per ``status`` (``{"ok": 8, "no gradient path": 80}``); ``{}`` without a status column."""
        if "status" not in self.df:
            return {}
        return {str(k): int(v) for k, v in self.df["status"].value_counts(sort=False).items()}

    def left_out(self) -> str:
        """One line naming the rows that hold no measurement, by reason ("" when there are none)."""
        c = {k: v for k, v in self.counts().items() if k != OK}
        if not c:
            return ""
        parts = ", ".join(f"{v} {k}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))
        return f"{sum(c.values())} of {len(self.df)} sites not ranked ({parts})"

    def summary(self, k: int = 10) -> str:
        """What the command line and the app print: the baselines, what could not be computed
        and why, and the top ``k`` sites (by effect for patching, by ``value`` for probes)."""
        lines = [f"{self.kind}: {len(self.df)} sites"]
        m = self.meta
        if self.kind in ("patch", "attribute"):
            if "metric_clean" in m:
                lines[0] += (f"; metric clean {m['metric_clean']:.4g}, corrupted {m['metric_corrupted']:.4g}"
                             f"; ablation {m.get('ablation') or 'none (clean patched into corrupted)'}")
            if "ablation" in m and m.get("ablation") in EFFECT:
                lines.append(f"effect = {EFFECT[m.get('ablation')]}")
        out = self.left_out()
        if out:
            lines.append(out)
        col, magnitude = self.rank_by
        if self.kind == "probe":
            score = "accuracy" if "accuracy" in self.df else ("r2" if "r2" in self.df else None)
            b = self.best(score) if score else None
            if b is None:
                lines.append("no site holds a measurement")
                return "\n".join(lines)
            extra = ", ".join(f"{c} {b[c]:.3f}" for c in ("control", "chance", "selectivity")
                              if c in b and pd.notna(b[c]))
            lines.append(f"best site by {score}: {b['site']} {score} {b[score]:.3f}" + (f" ({extra})" if extra else ""))
            cols = [c for c in ("site", score, "control", "chance", "selectivity") if c and c in self.df]
        else:
            cols = [c for c in ("site", "metric", "estimate", "score", "effect") if c in self.df]
            if not cols:  # other tables (a codebook report): the loop index and the ranked value
                cols = [c for c in ("site", "step", "time", "ponder", "layer") if c in self.df][:1] + [col]
        top = self.top(k)
        if top.empty:
            lines.append("no site holds a measurement")
        else:
            lines.append(f"top {len(top)} sites by {'|' + col + '|' if magnitude else col}:")
            lines.append(top[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        return "\n".join(lines)

    def __repr__(self) -> str:
        extra = f", tables={list(self.tables)}" if self.tables else ""
        return f"Result(kind={self.kind!r}, sites={len(self.df)}, value={self.value!r}{extra})"
