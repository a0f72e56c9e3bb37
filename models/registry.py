"""The model families: one ``Family`` per family, and the one place that says what a family is.

A family names its model classes (the ``class`` field of a checkpoint's ``config.json``), gives
the task a model was trained on as its task module's config dataclass (``task_of``: the one
definition of "the task of a model"), samples fresh inputs of that task, names the default metric
and probe targets of its analyses and the study in ``probes/`` that runs them, offers its
training presets (``models.recipes.<family>.PRESETS``) and has a label and a one-line
description. ``models.load`` / ``models.CLASSES``, the explorer's zoo and the analysis command
line all read this table; none of them branches on a family's name.

Nothing here imports torch or a model: classes, studies and recipes are named by module path
and imported when first used, so listing the zoo or reading a task stays cheap (reading
``presets`` imports the recipe, and with it the model).

>>> from models import registry
>>> registry.family_of("models/zoo/act-parity").name      # 'act' (read from config.json only)
>>> registry.task_of(model)                                # ParityConfig(size=16, ...)
>>> registry.sample(model, 4, seed=0)                      # 4 fresh problems of that task
>>> registry.get("act").dynamics.analyses                  # the loop-dynamics lab (models.dynamics_adapters)
>>> registry.get("warp").presets                           # {"warp-msd": {"args": {...}, "what": "..."}, ...}

Adding a family is new files plus one line at the end of this file,
``register(Family("toy", "Toy", "...", classes=("models.toy.Toy",), task="models.toy:task_of"))``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from workbench import files

__all__ = ["Family", "Dynamics", "ANALYSES", "register", "unregister", "get", "families", "names", "family_of",
           "family_of_class", "task_of", "sample", "class_table", "CLASSES"]

Ref = Callable | str  # a function, or "module:attribute" imported when first used


def _resolve(ref: Ref | None):
    """A function from a ``"module:attribute"`` reference (a function is returned as is)."""
    if ref is None or callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# the analyses of the loop-dynamics lab (workbench.dynamics), as the command line names them
ANALYSES = ("lens", "convergence", "transfer", "basin", "fixed-points")


@dataclass(frozen=True)
class Dynamics:
    """How the loop-dynamics lab runs on a family (torch-free; the adapters are imported when used).

    ``adapters``: ``"module:attribute"`` of a ``models.dynamics_adapters.Adapters`` (or of a
    function ``model -> Adapters``); ``analyses``: those of ``ANALYSES`` that apply; ``example``:
    the zoo model they run on by default (the family's flagship when empty); ``state``: one line
    naming the state and the readout.
    """

    adapters: Ref
    analyses: tuple[str, ...]
    example: str = ""
    state: str = ""

    def __post_init__(self):
        unknown = [a for a in self.analyses if a not in ANALYSES]
        if unknown or isinstance(self.analyses, str):
            raise ValueError(f"dynamics analyses {self.analyses!r}; allowed: {ANALYSES}")


@dataclass(frozen=True)
class Family:
    """What one model family is: its classes, its task, its analyses, its presets, its name on screen.

    ``task(config, **overrides)`` takes a model's config (the model's ``cfg`` dataclass or the
    ``config`` object of its config.json) and returns the task module's config dataclass;
    ``overrides`` replace fields (``n_nodes=64``). ``sampler(task, n, seed)`` draws inputs of
    that task; by default the task module's own ``sample(config, n, seed)``. ``study`` is the
    module in ``probes/`` whose ``STUDY`` runs the analyses (``probes.study.Study``); ``None``:
    the analyses do not cover the family. ``recipes`` is its training recipe module, which holds
    ``PRESETS`` (``""``: ``models.recipes.<name>``; ``None``: none); a recipe that does not exist
    yet gives no presets.
    """

    name: str  # command lines and URLs: "reasoner"
    label: str  # on screen: "Reasoner"
    description: str  # one line
    classes: tuple[str, ...]  # config.json class paths: "models.reasoner.Reasoner"
    task: Ref  # (model config, **overrides) -> the task's config dataclass
    sampler: Ref | None = None  # (task, n, seed) -> inputs; None: the task module's sample()
    study: str | Any = None  # "probes.reasoner" (its STUDY), "module:attribute", a Study; None: no analyses
    metric: str = ""  # the analyses' default metric (one of the study's)
    targets: tuple[str, ...] = ()  # the probe targets fitted by default
    recipes: str | None = ""  # module with PRESETS: {name: {"args": dict, "what": str}}
    flagship: str = ""  # the zoo model the explorer opens on
    dynamics: Dynamics | None = None  # the loop-dynamics lab's adapters; None: not covered

    def __post_init__(self):
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"family name {self.name!r}: use letters, digits, '-' and '_'")
        if isinstance(self.classes, str) or not self.classes or not all("." in c for c in self.classes):
            raise ValueError(f"family {self.name!r}: classes must be a tuple of 'module.Class' paths; "
                             f"got {self.classes!r}")

    # ----------------------------------------------------------------- task
    def task_of(self, model_or_config, **overrides):
        """The task this family's model (or model config) was trained on, as the task's dataclass."""
        cfg = getattr(model_or_config, "cfg", model_or_config)
        return _resolve(self.task)(cfg, **overrides)

    def sample(self, model_or_config, n: int, seed, **overrides):
        """``n`` fresh inputs of the model's task (``seed``: an int, a sequence or a Generator)."""
        return self.draw(self.task_of(model_or_config, **overrides), n, seed)

    def draw(self, task, n: int, seed):
        """``n`` fresh inputs of ``task`` (one of this family's task configs)."""
        draw = _resolve(self.sampler) or importlib.import_module(type(task).__module__).sample
        return draw(task, n, seed)

    # ------------------------------------------------------------- analyses
    @property
    def analysed(self) -> bool:
        """Do the analyses (patching, probing, codebooks) cover this family?"""
        return self.study is not None

    @property
    def dynamics_example(self) -> str:
        """The zoo model the dynamics lab runs on by default ("" without dynamics adapters)."""
        if self.dynamics is None:
            return ""
        return self.dynamics.example or self.flagship

    # ------------------------------------------------------- recipe, presets
    @property
    def recipe(self):
        """The family's training recipe module (``models.recipes.<name>``), or ``None`` while there is none."""
        if self.recipes is None:
            return None
        module = self.recipes or f"models.recipes.{self.name.replace('-', '_')}"
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as e:
            parents = {module[:i] for i in range(len(module)) if module[i] == "."} | {module}
            if e.name in parents:  # the module (or its package) does not exist (yet)
                return None
            raise

    @property
    def presets(self) -> dict[str, dict]:
        """``{preset: {"args": dict, "what": str}}``: the recipe's ``PRESETS`` ({} without a recipe)."""
        return dict(getattr(self.recipe, "PRESETS", None) or {})

    # ---------------------------------------------------------------- misc
    def importers(self) -> dict[str, Callable[[], type]]:
        """class path -> a function importing the class (the allow-list ``checkpoints.load`` takes)."""
        return {path: _importer(*path.rsplit(".", 1)) for path in self.classes}


def _importer(module: str, name: str) -> Callable[[], type]:
    return lambda: getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------- the table
_FAMILIES: dict[str, Family] = {}
# class path -> (module, attribute): the classes a checkpoint may name. Kept up to date by
# ``register`` / ``unregister`` (``models.CLASSES`` is this very dict).
CLASSES: dict[str, tuple[str, str]] = {}


def register(family: Family) -> Family:
    """Add a family; ``ValueError`` if its name or one of its classes is taken."""
    if family.name in _FAMILIES:
        raise ValueError(f"a model family named {family.name!r} is already registered")
    taken = [c for c in family.classes if c in CLASSES]
    if taken:
        raise ValueError(f"model class(es) {taken} already belong to a registered family")
    _FAMILIES[family.name] = family
    for path in family.classes:
        CLASSES[path] = tuple(path.rsplit(".", 1))
    return family


def unregister(name: str) -> Family:
    """Remove a family (and its classes from the allow-list); returns it."""
    family = get(name)
    del _FAMILIES[name]
    for path in family.classes:
        CLASSES.pop(path, None)
    return family


def get(name: str) -> Family:
    """The family named ``name``; ``ValueError`` lists the registered ones otherwise."""
    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model family {name!r}; allowed: {', '.join(_FAMILIES)}") from None


def families() -> dict[str, Family]:
    """Every registered family, in registration order (a copy)."""
    return dict(_FAMILIES)


def names(analysed: bool | None = None) -> tuple[str, ...]:
    """Family names (``analysed=True``: those the analyses cover)."""
    return tuple(n for n, f in _FAMILIES.items() if analysed is None or f.analysed == analysed)


def class_table() -> dict[str, Callable[[], type]]:
    """The allow-list of every registered class: class path -> a function importing it."""
    return {path: imp for fam in _FAMILIES.values() for path, imp in fam.importers().items()}


def family_of_class(path: str) -> Family | None:
    """The family whose classes include ``path`` (``None`` for a class of no family)."""
    return next((f for f in _FAMILIES.values() if path in f.classes), None)


def _class_path(model_or_folder) -> str:
    if isinstance(model_or_folder, (str, Path)):
        import models

        config = files.read_json_object(models.resolve(model_or_folder) / files.CONFIG)
        if not isinstance(config.get("class"), str):
            raise files.CheckpointError(f"{model_or_folder}: config.json names no model class")
        return config["class"]
    cls = model_or_folder if isinstance(model_or_folder, type) else type(model_or_folder)
    return f"{cls.__module__}.{cls.__qualname__}"


def family_of(model_or_folder) -> Family:
    """The family of a model, a model class, a zoo name or a checkpoint folder (read without loading).

    ``ValueError`` when its class belongs to no registered family.
    """
    path = _class_path(model_or_folder)
    family = family_of_class(path)
    if family is None:
        known = "; ".join(f"{f.name}: {', '.join(f.classes)}" for f in _FAMILIES.values())
        raise ValueError(f"model class {path!r} belongs to no registered model family ({known})")
    return family


def task_of(model_or_folder, **overrides):
    """The task a model was trained on, as its task module's config dataclass.

    ``model_or_folder``: a model, a zoo name or a checkpoint folder (read from config.json,
    without loading the model). ``overrides`` replace fields; ``None`` values are ignored.
    """
    family = family_of(model_or_folder)
    if isinstance(model_or_folder, (str, Path)):
        import models

        config = files.read_json_object(models.resolve(model_or_folder) / files.CONFIG).get("config")
        if not isinstance(config, dict):
            raise files.CheckpointError(f"{model_or_folder}: config.json holds no 'config' object")
        return family.task_of(config, **overrides)
    return family.task_of(model_or_folder, **overrides)


def sample(model_or_folder, n: int, seed, **overrides):
    """``n`` fresh inputs of the task a model (or zoo name, or checkpoint folder) was trained on."""
    return family_of(model_or_folder).draw(task_of(model_or_folder, **overrides), n, seed)


# ------------------------------------------------------------ the tasks of the families
def _field(cfg, name: str, default=None):
    """A field of a model config: its dataclass, or the ``config`` object of config.json."""
    return cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)


def _stored_task(cfg) -> dict:
    task = _field(cfg, "task") or {}
    if not isinstance(task, dict):
        raise ValueError(f"the model config's task must be an object; got {type(task).__name__}")
    return dict(task)


def _overridden(task, overrides: dict):
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(task, **given) if given else task


def reasoner_task(cfg, **overrides):
    """``GraphArithConfig`` of ``cfg.task`` (older configs: the model's modulus and name pool).

    ``n_nodes=`` below the stored number of leaves lowers the leaves with it.
    """
    from workbench.tasks import graph_arith as ga

    task = _stored_task(cfg) or {k: v for k in ("modulus", "name_pool") if (v := _field(cfg, k)) is not None}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "n_nodes" in given and "n_leaves" not in given and isinstance(given["n_nodes"], int):
        leaves = task.get("n_leaves", ga.GraphArithConfig.n_leaves)
        if isinstance(leaves, int) and leaves > given["n_nodes"] >= 1:
            given["n_leaves"] = given["n_nodes"]
    task.update(given)
    if "ops" in task:
        task["ops"] = tuple(task["ops"])
    return ga.GraphArithConfig(**task)


ACT_TASKS = {"parity": "workbench.tasks.parity:ParityConfig", "addition": "workbench.tasks.addition:AdditionConfig"}


def act_task(cfg, **overrides):
    """``ParityConfig`` or ``AdditionConfig``, from ``cfg.task_name`` and ``cfg.task``."""
    name = _field(cfg, "task_name", "parity")
    if name not in ACT_TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {tuple(ACT_TASKS)}")
    return _overridden(_resolve(ACT_TASKS[name])(**_stored_task(cfg)), overrides)


def sequence_task(cfg, **overrides):
    """WARP and the GRU: ``DynamicsConfig`` (a ``system`` is stored) or ``DigitsConfig``."""
    from workbench.tasks import digits as dg
    from workbench.tasks import dynamics as dy

    task = _stored_task(cfg)
    if not task:
        raise ValueError("this model stores no task in its config")
    return _overridden(dy.DynamicsConfig(**task) if "system" in task else dg.DigitsConfig(**task), overrides)


def gain_task(cfg, **overrides):
    """The stimulus distribution the gains adapt to (``cfg.biased``), an ``OrientationDistribution``."""
    from workbench.tasks import orientation as ori

    text = _field(cfg, "biased", "biased adapter=0 weight=0.5 width=0")
    try:
        return _overridden(ori.parse(text), overrides)
    except ValueError as e:
        raise ValueError(f"biased={text!r}: {e}") from None


# ---------------------------------------------------------------- the families
_DA = "models.dynamics_adapters"
register(Family("reasoner", "Reasoner",
                "recurrent transformer with a discrete bottleneck, solving modular-arithmetic graphs one hop a step",
                classes=("models.reasoner.Reasoner",), task=reasoner_task, study="probes.reasoner",
                metric="logit difference", targets=("value", "computed", "depth"), flagship="reasoner-z23",
                dynamics=Dynamics(f"{_DA}:REASONER", ("lens", "convergence", "transfer", "basin"), example="reasoner",
                                  state="steps.{t}.hook_resid_final; readout: the value head")))
register(Family("act", "ACT", "Graves' Adaptive Computation Time RNN: it ponders a learned number of steps per input",
                classes=("models.act.ACT",), task=act_task, study="probes.act",
                metric="signed output logit", targets=("parity", "halts"), flagship="act-parity",
                dynamics=Dynamics(f"{_DA}:ACT", ANALYSES,
                                  state="time.0.ponder.{t}.hook_state; readout: the output logit")))
register(Family("warp", "WARP", "weight-space linear RNN: the state is the weights of a root network",
                classes=("models.warp.Warp",), task=sequence_task, study="probes.warp",
                metric="minus one-step MSE", targets=("params",), flagship="warp-phys-msd",
                dynamics=Dynamics(f"{_DA}:WARP", ANALYSES,
                                  state="time.{t}.hook_theta (recurrent mode); readout: the root network "
                                        "decoded from theta_t at the last step's query")))
register(Family("gru", "GRU baseline", "GRU forecaster on WARP's tasks, the paper's baseline",
                classes=("models.gru.GRU",), task=sequence_task, recipes="models.recipes.warp",
                dynamics=Dynamics(f"{_DA}:GRU", ANALYSES, example="gru-msd",
                                  state="time.{t}.hook_hidden; readout: the forecast of the next value")))
register(Family("gain", "Gain circuit", "recurrent cortical circuit whose neurons adapt only their gains",
                classes=("models.gain.GainCircuit",), task=gain_task, flagship="gain-v1",
                dynamics=Dynamics(f"{_DA}:GAIN", ANALYSES,
                                  state="time.{t}.hook_rates (Euler steps); readout: the peak neuron")))
