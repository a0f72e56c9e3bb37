"""The family registry (``models/registry.py``) and the studies (``probes/study.py``).

Every zoo model belongs to exactly one registered family, the allow-list of classes is the
registry's, and a new family needs only its own code plus one ``register`` line: a toy looped
family defined in this file gets the command line's ``patch`` / ``attribute`` / ``probe`` and the
explorer's Patching and Probing pages without any other change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

import models
import probes
from apps import cli, ui, zoo
from models import registry
from models.registry import Family
from probes import study as studies
from probes.study import Experiment, Option, Study, Target
from tests import app_models
from workbench import checkpoints
from workbench.hooks import HookedRecurrentModule, HookPoint, hook_list
from workbench.sites import Sites

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "apps" / "explorer.py")

torch.set_num_threads(1)


# ------------------------------------------------------------------ the registry
def test_every_zoo_model_belongs_to_exactly_one_family():
    names = models.zoo_names()
    assert names, "the zoo is empty"
    for name in names:
        cls = checkpoints.read_config(models.resolve(name))["class"]
        owners = [f.name for f in registry.families().values() if cls in f.classes]
        assert len(owners) == 1, (name, cls, owners)
        assert zoo.family_of(name) == registry.family_of(name).name == owners[0]


def test_the_allow_list_is_the_registrys_classes():
    classes = [c for f in registry.families().values() for c in f.classes]
    assert len(classes) == len(set(classes))  # no class in two families
    assert set(models.allowed_classes()) == set(classes) == set(models.CLASSES)
    assert set(models.allowed_classes({"x.Y": lambda: None})) == set(classes) | {"x.Y"}
    assert zoo.FAMILIES == {n: f.classes for n, f in registry.families().items()}
    assert zoo.LABELS == {n: f.label for n, f in registry.families().items()}
    assert set(zoo.ANALYSIS_FAMILIES) == {n for n, f in registry.families().items() if f.study}


def test_listing_the_zoo_and_reading_tasks_import_no_torch():
    code = ("import sys, models; from models import registry; models.available(); "
            "[registry.task_of(n) for n in models.zoo_names()]; registry.sample('act-parity', 3, 0); "
            "assert 'torch' not in sys.modules, 'torch'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr


def test_the_task_of_every_zoo_model_is_its_task_modules_config():
    for name in models.zoo_names():
        task = registry.task_of(name)
        assert is_dataclass(task) and type(task).__module__.startswith("workbench.tasks."), (name, task)
    assert registry.task_of("reasoner", n_nodes=4).n_nodes == 4  # overrides; the leaves follow a smaller graph
    assert registry.task_of("reasoner", n_nodes=4).n_leaves <= 4
    assert len(registry.sample("act-parity", 5, 0).vectors) == 5
    assert len(registry.sample("reasoner", 3, np.random.default_rng(0), n_nodes=6)) == 3


def test_presets_come_from_the_recipes_module_when_there_is_one():
    for family in registry.families().values():
        for name, preset in family.presets.items():
            assert isinstance(preset["args"], dict) and isinstance(preset["what"], str), (family.name, name)
    ghost = Family("ghost", "Ghost", "no recipes yet", classes=("models.ghost.Ghost",), task=registry.act_task)
    assert ghost.presets == {}  # models.recipes.ghost does not exist


def test_register_refuses_taken_names_and_classes():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Family("act", "A", "", classes=("x.Y",), task=registry.act_task))
    with pytest.raises(ValueError, match="already belong"):
        registry.register(Family("act2", "A", "", classes=("models.act.ACT",), task=registry.act_task))
    with pytest.raises(ValueError, match="classes"):
        Family("bad", "B", "", classes="models.act.ACT", task=registry.act_task)
    with pytest.raises(ValueError, match="unknown model family 'nope'"):
        registry.get("nope")
    assert "act2" not in registry.names() and "x.Y" not in models.CLASSES


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folders = app_models.all_families(tmp_path_factory.mktemp("registry"))
    return {name: models.load(folder) for name, folder in folders.items()}


def test_each_family_default_metric_and_targets_are_its_studys(tiny):
    for name in ("reasoner", "act", "warp"):
        family, model = registry.get(name), tiny[name]
        study = studies.of(model)
        assert study is studies.of(name) and study.family == name
        assert family.metric == study.metrics[0]
        assert set(study.expand(model, family.targets)) <= set(study.targets(model)) and family.targets
        assert study.default_target in ("", *study.targets(model))
    assert studies.of(registry.get("gru")) is None
    with pytest.raises(ValueError, match="Gain circuit model; the analyses cover the families Reasoner, ACT, WARP"):
        studies.need("gain")
    with pytest.raises(ValueError, match="dynamical"):
        studies.of(tiny["warp-digits"]).check(tiny["warp-digits"])


# ------------------------------------------------------------ a new family, in one line
@dataclass(frozen=True)
class ToyTask:
    """Vectors x ~ N(0, 1); the answer is whether sum(x) > 0."""

    d: int = 4


def toy_sample(task: ToyTask, n: int, seed) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, task.d)).astype(np.float32)


def toy_task(cfg, **overrides) -> ToyTask:
    task = cfg.get("task") if isinstance(cfg, dict) else cfg.task
    return ToyTask(**{**task, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class TinyConfig:
    d: int = 4
    max_steps: int = 4
    task: dict | None = None


class StepHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_state = HookPoint()


class TinyLoop(HookedRecurrentModule):
    """s_{t+1} = tanh(W s_t + x): odd in x, so negating the input negates every state."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        self.W = nn.Linear(cfg.d, cfg.d, bias=False)
        self.steps = hook_list(cfg.max_steps, StepHooks)
        self.setup()

    def forward(self, x: torch.Tensor, steps: int = 3) -> torch.Tensor:
        self.check_steps(steps)
        s = torch.zeros_like(x)
        for t in range(steps):
            s = self.steps[t].hook_state(torch.tanh(self.W(s) + x))
        return s

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_config(cls, config: dict) -> "TinyLoop":
        return cls(TinyConfig(**config))


class ToyStudy(Study):
    """Corrupted = -x (the answer flips); metric: the final state's sum, signed by the clean run's."""

    family = "toy"
    metrics = ("signed state sum",)
    page_sites = ("steps.*.hook_state", "none")
    sizes = {"patch": (6, 1, 64), "probe": (200, 20, 2000), "codebook": (50, 10, 500)}

    def options(self, model, analysis):
        if analysis == "probe":
            return []
        return [Option("steps", "Steps", 3, 1, model.cfg.max_steps, key="steps", query="steps")]

    def experiment(self, model, n, seed, steps=3, **options) -> Experiment:
        x = torch.from_numpy(registry.sample(model, n, seed))
        with torch.no_grad():
            sign = torch.sign(model(x, steps=steps).sum(-1))

        def metric(out):
            return out.sum(-1) * sign

        changed = (x.sum(-1) > 0).numpy() != (-x.sum(-1) > 0).numpy()
        return Experiment(x, -x, metric, {"steps": steps}, Sites("steps.*.hook_state"),
                          f"{n} toy vectors, negated; metric: signed state sum", target_changed=changed)

    def collect(self, model, n, seed, *, batch_size=None, progress=False, **options):
        x = registry.sample(model, n, seed)
        batch = probes.ProbeBatch((torch.from_numpy(x),), {}, np.arange(n), None,
                                  {"item": np.arange(n), "positive": (x.sum(-1) > 0).astype(int)})
        return probes.collect(model, [batch], Sites("steps.*.hook_state"))

    def targets(self, model):
        return {"positive": Target("positive", help="sum(x) > 0")}


STUDY = ToyStudy()


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy family registered (one line) and one checkpoint of it; unregistered afterwards."""
    registry.register(Family("toy", "Toy loop", "a four-step tanh loop", classes=(f"{__name__}.TinyLoop",),
                             task=toy_task, sampler=toy_sample, study=f"{__name__}:STUDY",
                             metric="signed state sum", targets=("positive",)))
    try:
        torch.manual_seed(0)
        model = TinyLoop(TinyConfig(task={"d": 4}))
        with torch.no_grad():
            model.W.weight.mul_(0.5)
        checkpoints.save(tmp_path / "toy", model)
        monkeypatch.setenv(ui.ROOT_ENV, str(tmp_path))
        yield tmp_path / "toy"
    finally:
        registry.unregister("toy")
    assert "toy" not in registry.names() and f"{__name__}.TinyLoop" not in models.CLASSES


def test_a_registered_family_is_everywhere(toy):
    assert zoo.family_of(toy) == "toy" and "toy" in zoo.ANALYSIS_FAMILIES and zoo.LABELS["toy"] == "Toy loop"
    model = models.load(toy)
    assert isinstance(model, TinyLoop) and registry.task_of(model) == ToyTask(4) == registry.task_of(toy)
    assert studies.of(model) is STUDY
    exp = STUDY.patching(model, n=4, seed=0)
    assert exp.target_changed.all() and (exp.metric(model(exp.clean)) > exp.metric(model(exp.corrupted))).all()


def test_the_command_line_runs_the_analyses_of_a_new_family(toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["patch", str(toy), "--n", "6", "--out", str(out)]) == 0
    df = pd.read_csv(out / "patch.csv")
    assert list(df.step) == [0, 1, 2]
    assert df.score.iloc[-1] == pytest.approx(1.0)  # the final state carries all of the clean behaviour
    assert cli.main(["attribute", str(toy), "--sites", "steps.1.hook_state", "--out", str(out)]) == 0
    assert cli.main(["probe", str(toy), "--n", "200", "--out", str(out)]) == 0
    assert (out / "probe_positive.csv").exists() and (out / "probe.csv").exists()
    capsys.readouterr()
    assert cli.main(["probe", str(toy), "--targets", "colour", "--out", str(out)]) == 2
    assert "positive" in capsys.readouterr().err
    assert cli.main(["codebook", str(toy), "--out", str(out)]) == 2
    assert "no codebook report" in capsys.readouterr().err


def _page(page: str, folder: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.query_params["model"] = str(folder)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_the_explorer_pages_open_a_new_family(toy):
    at = _page("patching", toy)
    assert at.get("plotly_chart") and at.number_input(key="patch_steps").value == 3
    at.number_input(key="patch_steps").set_value(2).run()
    assert not at.exception and not at.error and at.get("plotly_chart")
    at.number_input(key="patch_steps").set_value(9).run()  # the study's range on this model: 1..4
    assert "Steps: 9 is out of range; allowed 1..4" in " ".join(e.value for e in at.error)
    at = _page("probing", toy)
    assert at.get("plotly_chart") and at.selectbox(key="probe_target_toy").value == "positive"
