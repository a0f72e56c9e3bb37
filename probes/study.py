"""One study per model family: what the analyses need to know to run on it.

A ``Study`` is the family's standard experiment for each analysis, behind one interface that
the command line (``workbench patch|attribute|probe|codebook``) and the explorer's analysis
pages use without knowing the family:

* patching: ``experiment(model, n, seed, **options)`` -> an ``Experiment`` (clean and corrupted
  inputs, the metric, default sites, a description); ``metrics`` names the metrics offered
  (the first is the experiment's own; the others are built from it);
* probing: ``collect(model, n, seed, **options)`` -> ``probes.Activations`` (one row per sample,
  with the targets as columns), ``targets(model)`` -> ``{name: Target}`` (how y is read from
  those rows, and on which sites), ``controls`` (the control tasks offered);
* codebook: ``codebook(model, n, seed, **options)`` -> the codebook report (a ``Result``).

``options(model, analysis)`` lists the family's inputs beyond ``n`` and ``seed`` (the reasoner's
graph size, WARP's time stride, the number of k-means clusters, ...) with their range on this
model, so a page can draw a field for each and both front ends check them the same way. A
family's study lives in its ``probes`` module as ``STUDY``; the model registry
(``models.registry``) names that module, and ``of(model)`` finds it.

>>> from probes import study
>>> s = study.of(model)                                   # the study of the model's family
>>> exp = s.patching(model, n=8, seed=0)                  # inputs, metric, default sites
>>> res = patch(model, exp.clean, exp.corrupted, exp.metric, exp.sites, forward_kwargs=exp.forward_kwargs)
>>> acts = s.collect(model, n=500, seed=0)
>>> probe = s.fit(model, acts, "parity")                  # one probe per site + the control task
>>> report = s.codebook(model, n=300, seed=0)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
from torch import Tensor

from workbench.results import Result
from workbench.sites import Sites

__all__ = ["Experiment", "Option", "Target", "Study", "of", "ANALYSES"]

ANALYSES = ("patch", "probe", "codebook")


@dataclass
class Experiment:
    """Inputs, metric and default sites for ``patch`` / ``attribute``.

    ``loops`` restricts the loop axes of sites typed by hand (e.g. every 8th time step of a
    long sequence: ``{"time": range(0, T, 8)}``); ``sites`` is the default selection.
    """

    clean: Tensor
    corrupted: Tensor
    metric: Callable  # model output -> [B]
    forward_kwargs: dict
    sites: Sites
    description: str
    gaps: np.ndarray | None = None  # [B] metric(clean run) - metric(corrupted run), each >= margin
    target_changed: np.ndarray | None = None  # [B] the exact answer differs between clean and corrupted
    loops: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    """One input of an analysis beyond ``n`` and ``seed``: a keyword of the study's function.

    An integer in ``lo..hi`` (``text=0``), or a text of at most ``text`` characters. ``key`` is
    its widget key (after the analysis, e.g. ``probe_per_problem``) and the command line's
    option of the same name (``--per-problem``); ``query`` its deep-link parameter;
    ``per_family``: the widget key also names the family (its default differs between families).
    """

    name: str
    label: str
    default: Any
    lo: int = 0
    hi: int = 0
    text: int = 0
    help: str = ""
    key: str = ""
    query: str | None = None
    per_family: bool = False

    @property
    def flag(self) -> str:
        return self.key or self.name

    def check(self, value):
        """``value`` if allowed; ``ValueError`` names the option and its range otherwise."""
        if self.text:
            if not isinstance(value, (str, list, tuple)):
                raise ValueError(f"{self.label}: expected text, got {value!r}")
            if isinstance(value, str) and len(value) > self.text:
                raise ValueError(f"{self.label}: the text has {len(value):,} characters; at most {self.text:,}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not self.lo <= int(value) <= self.hi:
            raise ValueError(f"{self.label}: {value!r} is out of range; allowed {self.lo}..{self.hi}")
        return int(value)


@dataclass(frozen=True)
class Target:
    """One probe target: how its labels come from the collected rows.

    ``y``: a column of ``Activations.rows``, or ``rows -> labels`` (an array with one entry per
    row, or ``fn(site) -> array`` for targets that depend on the site, such as "computed by
    this step"); ``sites``: only these sites can be probed for it (a glob).
    """

    y: str | Callable
    sites: str | None = None
    help: str = ""

    def labels(self, rows):
        return self.y if isinstance(self.y, str) else self.y(rows)


class Study:
    """How the analyses run on one model family (subclass it; instantiate once as ``STUDY``).

    Override ``experiment``, ``collect``, ``targets`` and ``codebook`` (any the family lacks
    stays unavailable), and ``check`` when only some models of the family are covered.
    """

    family: str = ""
    # patching
    metrics: tuple[str, ...] = ()  # the first is the experiment's own metric
    page_sites: tuple[str, str] = ("", "none")  # (patterns, positions) a page opens on: quick to compute
    positions: str = "none"  # positions of hand-typed sites on the command line
    # probing
    controls: tuple[str, ...] = ("none",)  # control tasks: "none" relabels each row; "variable" each type
    fit_kwargs: dict = {}  # more keywords of probes.fit (e.g. groups for the held-out split)
    default_target: str = ""  # the target a page shows first
    # inputs: (default, lo, hi) of n for each analysis
    sizes: dict[str, tuple[int, int, int]] = {"patch": (8, 1, 256), "probe": (400, 20, 5000),
                                              "codebook": (300, 10, 5000)}

    # -------------------------------------------------------------- family parts
    def check(self, model) -> None:
        """``ValueError`` when the study does not cover this model (e.g. another task)."""

    def options(self, model, analysis: str) -> list[Option]:
        """The inputs of ``analysis`` ('patch', 'probe' or 'codebook') beyond n and seed."""
        return []

    def experiment(self, model, n: int, seed: int, **options) -> Experiment:
        raise ValueError(f"the {self.family} study has no patching experiment")

    def metric(self, model, experiment: Experiment, name: str) -> Callable:
        """The metric ``name`` (one of ``metrics`` after the first) built from the experiment."""
        raise ValueError(f"metric {name!r}; allowed for {self.family}: {self.metrics}")

    def collect(self, model, n: int, seed: int, *, batch_size: int | None = None, progress: bool = False,
                **options):
        raise ValueError(f"the {self.family} study collects no activations for probes")

    def targets(self, model) -> dict[str, Target]:
        return {}

    def aliases(self, model) -> dict[str, tuple[str, ...]]:
        """Names for groups of targets (``params`` -> every physical parameter)."""
        return {}

    def codebook(self, model, n: int, seed: int, **options) -> Result:
        raise ValueError(f"the {self.family} study has no codebook report")

    # ------------------------------------------------------------ shared logic
    def size(self, analysis: str) -> tuple[int, int, int]:
        """(default, lo, hi) of n for ``analysis``."""
        return self.sizes[analysis]

    def checked(self, model, analysis: str, options: dict) -> dict:
        """``options`` checked against ``options(model, analysis)``; ``None`` values dropped."""
        offered = {o.name: o for o in self.options(model, analysis)}
        unknown = [k for k in options if k not in offered]
        if unknown:
            raise ValueError(f"option(s) {unknown} are not inputs of the {self.family} {analysis}; "
                             f"allowed: {list(offered) or 'none'}")
        return {k: offered[k].check(v) for k, v in options.items() if v is not None}

    def patching(self, model, n: int | None = None, seed: int = 0, metric: str | None = None,
                 **options) -> Experiment:
        """The family's experiment with the chosen metric (default: its own, ``metrics[0]``)."""
        self.check(model)
        if metric is not None and metric not in self.metrics:
            raise ValueError(f"metric {metric!r}; allowed for {self.family}: {self.metrics}")
        exp = self.experiment(model, int(n or self.size("patch")[0]), int(seed),
                              **self.checked(model, "patch", options))
        if metric is None or metric == self.metrics[0]:
            return exp
        return replace(exp, metric=self.metric(model, exp, metric),
                       description=f"{exp.description}; the metric replaced by: {metric}")

    def target_names(self, model) -> list[str]:
        """Every name ``--targets`` takes: the group names, then the targets."""
        return [*self.aliases(model), *self.targets(model)]

    def expand(self, model, names) -> list[str]:
        """Target names with the groups replaced by their members, each once, in order."""
        groups = self.aliases(model)
        out = [m for name in names for m in groups.get(name, (name,))]
        return list(dict.fromkeys(out))

    def fit(self, model, acts, target: str, control: str = "none", seed: int = 0, progress: bool = False) -> Result:
        """One probe per site for ``target``, with the control task (selectivity = score - control)."""
        targets = self.targets(model)
        if target not in targets:
            raise ValueError(f"target {target!r}; allowed for {self.family}: {tuple(targets)}")
        if control not in self.controls:
            raise ValueError(f"control types {control!r}; allowed for {self.family}: "
                             f"{', '.join(repr(c) for c in self.controls)}")
        from probes.core import fit

        t = targets[target]
        kwargs = {**self.fit_kwargs, "target_name": target, "seed": int(seed), "progress": progress,
                  "types": None if control == "none" else control}
        if t.sites:
            kwargs["sites"] = t.sites
        return fit(acts, t.labels(acts.rows), **kwargs)


def of(model_or_family) -> Study | None:
    """The study of a model's family (or of a family, or its name); ``None`` if the analyses do not cover it."""
    from models import registry

    family = model_or_family
    if isinstance(family, str):
        family = registry.get(family)
    elif not isinstance(family, registry.Family):
        family = registry.family_of(family)
    if family.study is None:
        return None
    if not isinstance(family.study, str):
        return family.study
    module, _, attr = family.study.partition(":")
    return getattr(importlib.import_module(module), attr or "STUDY")


def need(model_or_family) -> Study:
    """The study of a model's family; ``ValueError`` says which families the analyses cover."""
    from models import registry

    found = of(model_or_family)
    if found is None:
        given = model_or_family
        if isinstance(given, registry.Family):
            family, what = given, ""
        elif isinstance(given, str):
            family, what = registry.get(given), ""
        else:
            family, what = registry.family_of(given), f" ({type(given).__name__})"
        covered = ", ".join(registry.get(n).label for n in registry.names(analysed=True))
        raise ValueError(f"this is a {family.label} model{what}; the analyses cover the families {covered} "
                         "(use the Python API with your own inputs and metric)")
    return found
