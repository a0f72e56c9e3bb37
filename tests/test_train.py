import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.toy import ToyLoop, toy_batch
from workbench import checkpoints
from workbench.train import TrainConfig, TrainingError, TrainSpec, saved_step, train

ROOT = Path(__file__).resolve().parents[1]
TOY = checkpoints.allow(ToyLoop)


def run(out, steps, resume=False, nan_at=None, checkpoint_every=5, time_limit_min=None, crash_at=None, overwrite=False,
        init_from=None, weights=None):
    torch.manual_seed(0)
    model = ToyLoop()
    if weights is not None:
        model.load_state_dict(weights)

    def batch(rng, step):
        if step == crash_at:
            raise KeyboardInterrupt  # the run is killed here
        return toy_batch(rng, step, nan_at=nan_at)

    spec = TrainSpec(model, batch,
                     evaluate=lambda m: {"w_norm": m.lin.weight.norm().item()})
    cfg = TrainConfig(steps=steps, lr=1e-2, warmup=2, out=str(out), resume=resume, progress=False,
                      checkpoint_every=checkpoint_every, eval_every=5, time_limit_min=time_limit_min,
                      overwrite=overwrite, init_from=init_from)
    return model, train(spec, cfg)


def test_checkpoint_round_trip_and_metrics(tmp_path):
    model, result = run(tmp_path / "a", 10)
    loaded = checkpoints.load(tmp_path / "a", TOY)
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["step"] == 10 and "w_norm" in metrics["evaluation"]
    assert result["train_wall_s"] >= 0 and "torch" in result["hardware"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full, _ = run(tmp_path / "full", 12)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "part", 12, checkpoint_every=7, crash_at=9)  # killed after the step-7 checkpoint
    resumed, _ = run(tmp_path / "part", 12, resume=True)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k])
    assert saved_step(tmp_path / "part") == 12


def test_a_fine_tune_starts_from_another_runs_weights_with_a_fresh_optimizer(tmp_path):
    from safetensors.torch import load_file

    first, _ = run(tmp_path / "first", 6)
    tuned, _ = run(tmp_path / "tuned", 4, init_from=str(tmp_path / "first"))
    # the same as a model given those weights by hand and trained from step 0
    by_hand, _ = run(tmp_path / "by_hand", 4, weights=load_file(str(tmp_path / "first" / "model.safetensors")))
    fresh, _ = run(tmp_path / "fresh", 4)
    for k, v in tuned.state_dict().items():
        assert torch.equal(v, by_hand.state_dict()[k])
    assert not torch.equal(tuned.lin.weight, fresh.lin.weight)
    assert saved_step(tmp_path / "tuned") == 4
    assert checkpoints.read_config(tmp_path / "tuned")["train"]["init_from"] == str(tmp_path / "first")
    with pytest.raises(ValueError, match=r"init_from=.*no model.safetensors there"):
        run(tmp_path / "bad", 4, init_from=str(tmp_path / "no-such-run"))


def test_same_seed_same_weights(tmp_path):
    a, _ = run(tmp_path / "a", 6)
    b, _ = run(tmp_path / "b", 6)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step 7.*step 5"):
        run(tmp_path / "n", 20, nan_at=7)
    kept = checkpoints.load(tmp_path / "n", TOY)
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert saved_step(tmp_path / "n") == 5


def test_resume_refuses_a_different_config(tmp_path):
    run(tmp_path / "r", 5)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["config"]["d"] = 5
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(checkpoints.CheckpointError, match="config differs"):
        run(tmp_path / "r", 10, resume=True)


def test_corrupt_or_mismatched_checkpoints_name_the_file(tmp_path):
    run(tmp_path / "c", 5)
    folder = tmp_path / "c"
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(checkpoints.CheckpointError, match=r"model.safetensors: corrupt"):
        checkpoints.load(folder, TOY)
    weights.write_bytes(good)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["config"]["d"] = 6
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(checkpoints.CheckpointError, match=r"model.safetensors: does not match .*shape mismatch"):
        checkpoints.load(folder, TOY)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(checkpoints.CheckpointError, match=r"config.json: corrupt JSON"):
        checkpoints.load(folder, TOY)
    with pytest.raises(checkpoints.CheckpointError, match="not found"):
        checkpoints.load(tmp_path / "missing", TOY)


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "f.json"
    checkpoints.write_json(target, {"a": 1})

    def broken(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        checkpoints.atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_write_gives_files_the_usual_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        checkpoints.write_json(tmp_path / "f.json", {"a": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644  # readable by others, like open()


@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(v, w1[k]) for k, v in w0.items())
    single = ToyLoop()
    assert not all(torch.equal(v, single.state_dict()[k]) for k, v in w0.items())  # it did train
    assert json.loads((tmp_path / "config.json").read_text())["train"]["world_size"] == 2


def test_a_reasoner_resumes_although_its_config_holds_tuples(tmp_path):
    from dataclasses import asdict

    from models.reasoner import Reasoner, ReasonerConfig
    from models.reasoner_data import training_batch
    from workbench.tasks import graph_arith as ga

    task = ga.GraphArithConfig(n_nodes=6, n_leaves=3, max_depth=2, modulus=5, name_pool=16)
    assert isinstance(task.ops, tuple)  # saved as a JSON list

    def fit(steps, resume):
        torch.manual_seed(0)
        model = Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=8, modulus=5, name_pool=16,
                                        task=asdict(task)))
        spec = TrainSpec(model, lambda rng, step: training_batch(model.cfg, task, 4, rng, 6))
        return train(spec, TrainConfig(steps=steps, out=str(tmp_path), resume=resume, progress=False, threads=1,
                                       checkpoint_every=2))

    fit(2, False)
    assert fit(4, True)["step"] == 4


def test_a_resumed_run_card_lists_every_command_in_order(tmp_path):
    from workbench import cards

    first = "workbench train reasoner --preset quick --time-limit-min 25 --out runs/a"
    second = "workbench train reasoner --preset quick --time-limit-min 15 --resume --out runs/a"

    def card(command):
        cards.write_card(tmp_path, title="t", headline="h", what="w", command=command, seed=0, wall_s=1.0,
                         hardware="cpu", results=[{"a": 1}])

    card(cards.commands_so_far(tmp_path, first, resumed=False))
    assert cards.card_command(tmp_path / "card.md") == first
    card(cards.commands_so_far(tmp_path, second, resumed=True))
    assert cards.card_command(tmp_path / "card.md") == f"{first}\n{second}"
    card(cards.commands_so_far(tmp_path, second, resumed=True))  # resumed twice: it ran twice
    assert cards.card_command(tmp_path / "card.md").splitlines() == [first, second, second]
    assert cards.commands_so_far(tmp_path, first, resumed=False) == first  # a fresh run starts over
    assert cards.card_command(tmp_path / "missing.md") == ""


def test_a_run_is_never_replaced_by_accident(tmp_path):
    run(tmp_path / "o", 5)
    weights = (tmp_path / "o" / checkpoints.WEIGHTS).read_bytes()
    with pytest.raises(FileExistsError, match="--resume to continue it, --overwrite"):
        run(tmp_path / "o", 5)
    (tmp_path / "o" / "train_state.json").unlink()  # a finished checkpoint without training state
    with pytest.raises(FileExistsError, match="cannot be resumed"):
        run(tmp_path / "o", 8, resume=True)
    assert (tmp_path / "o" / checkpoints.WEIGHTS).read_bytes() == weights
    run(tmp_path / "o", 3, overwrite=True)
    assert saved_step(tmp_path / "o") == 3


def test_a_config_naming_a_class_off_the_allow_list_is_never_imported(tmp_path):
    run(tmp_path / "h", 2)
    for name in ("antigravity.x", "this.x", "os.system"):
        cfg = json.loads((tmp_path / "h" / "config.json").read_text())
        cfg["class"] = name
        (tmp_path / "h" / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(checkpoints.CheckpointError, match=r"not allowed; allowed: tests\.toy\.ToyLoop"):
            checkpoints.load(tmp_path / "h", TOY)
    assert "antigravity" not in sys.modules and "this" not in sys.modules


def test_weights_of_the_wrong_dtype_or_not_finite_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    run(tmp_path / "w", 2)
    path = tmp_path / "w" / checkpoints.WEIGHTS
    state = load_file(str(path))
    save_file({**state, "lin.weight": state["lin.weight"].double()}, str(path))
    with pytest.raises(checkpoints.CheckpointError, match=r"dtype mismatch lin.weight: file torch.float64"):
        checkpoints.load(tmp_path / "w", TOY)
    bad = state["lin.weight"].clone()
    bad[0, 0] = float("nan")
    save_file({**state, "lin.weight": bad}, str(path))
    with pytest.raises(checkpoints.CheckpointError, match=r"non-finite values .*lin.weight"):
        checkpoints.load(tmp_path / "w", TOY)
