"""Every ``workbench`` command turns an expected failure into one line ``workbench: error: ...``
and exit status 2 (Ctrl-C: 130), never a traceback; bad values stop before any heavy work."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from apps.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY_ACT = ["--size", "6", "--hidden", "8", "--max-ponder", "3", "--steps", "2", "--warmup", "1", "--eval-every", "2",
            "--eval-n", "4", "--final-n", "8", "--batch-size", "4", "--threads", "1", "--no-progress"]


def fails(capsys, argv: list[str], *expected: str) -> str:
    """Run ``workbench argv`` in-process: exit status 2, one error line that contains ``expected``."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (argv, rc, err)
    assert len(lines) == 1 and lines[0].startswith("workbench: error: "), (argv, err)
    for text in expected:
        assert text in lines[0], (argv, text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    contents = {"int": "42", "null": "null", "class-int": '{"class": 5}', "corrupt": "{not json",
                "foreign": '{"class": "antigravity.x", "config": {}}'}
    folders = {}
    for name, text in contents.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(text)
        folders[name] = root / name
    return folders


# ------------------------------------------------------------------ option values
BAD_TRAIN = [
    (["--steps", "-5"], "--steps"),
    (["--steps", "0"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--eval-every", "-1"], "--eval-every"),
    (["--lr", "1e30"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--grad-clip", "-1"], "--grad-clip"),
    (["--threads", "-1"], "--threads"),
    (["--threads", "0"], "--threads"),
    (["--threads", "100000"], "--threads"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(10**30)], "--seed"),
    (["--time-limit-min", "0"], "--time-limit-min"),
    (["--device", "nope"], "--device"),
    (["--data-workers", "-2"], "--data-workers"),
    (["--out", ""], "--out"),
    (["--resume", "--overwrite"], "resume and overwrite"),
    (["--steps", "1.5"], "--steps"),
    (["--preset", "nope"], "--preset"),
    (["--no-such-option", "1"], "--no-such-option"),
]
FAMILY_BAD = {
    "reasoner": [(["--d-model", "0"], "--d-model"), (["--n-heads", "0"], "--n-heads"),
                 (["--d-model", "130"], "--d-model=130"), (["--latent", "foo"], "--latent"),
                 (["--min-nodes", "0"], "--min-nodes"), (["--min-nodes", "1000"], "--min-nodes"),
                 (["--fixed-steps", "0"], "--fixed-steps"), (["--error-prob", "1.5"], "--error-prob"),
                 (["--n-nodes", str(10**9)], "--n-nodes"), (["--eval-n", "0"], "--eval-n")],
    "act": [(["--eps", "2"], "--eps"), (["--max-ponder", "0"], "--max-ponder"), (["--size", "70"], "--size=70"),
            (["--tau", "-1"], "--tau"), (["--no-act", "--fixed-steps", "9", "--max-ponder", "6"], "--fixed-steps=9"),
            (["--curriculum-steps", "-1"], "--curriculum-steps"), (["--final-n", "0"], "--final-n"),
            (["--task", "sorting"], "--task")],
    "warp": [(["--noise", "-1"], "--noise"), (["--forcing-min", "2"], "--forcing-min"),
             (["--test-fraction", "1"], "--test-fraction"), (["--length", "0"], "--length"),
             (["--context", "500"], "--context=500"), (["--root-act", "foo"], "--root-act"),
             (["--root-width", "0"], "--root-width"), (["--dt", "inf"], "--dt"), (["--gru-hidden", "-3"], "--gru-hidden")],
}


@pytest.mark.parametrize("family", sorted(FAMILY_BAD))
def test_train_rejects_bad_values_in_one_line(family, capsys, tmp_path):
    for args, flag in BAD_TRAIN + FAMILY_BAD[family]:
        out = [] if "--out" in args else ["--out", tmp_path / "run"]
        fails(capsys, ["train", family, *args, *out], flag)
    assert not (tmp_path / "run").exists()  # nothing was written


def test_train_gain_rejects_bad_values_and_never_overwrites(capsys, tmp_path):
    for args, flag in [(["--n-neurons", "2"], "--n-neurons"), (["--tau", "-1"], "--tau"), (["--kappa", "inf"], "--kappa"),
                       (["--dt", "20"], "--dt=20"), (["--n-samples", "0"], "--n-samples"), (["--threads", "0"], "--threads"),
                       (["--seed", "-1"], "--seed"), (["--solver", "newton"], "--solver"), (["--out", ""], "--out"),
                       (["--biased", "biased weight=2"], "biased")]:
        out = [] if "--out" in args else ["--out", tmp_path / "g"]
        fails(capsys, ["train", "gain", *args, *out], flag)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "config.json").write_text("{}")
    fails(capsys, ["train", "gain", "--out", tmp_path / "g"], "already holds a checkpoint", "--overwrite")
    (tmp_path / "file").write_text("x")
    fails(capsys, ["train", "gain", "--out", tmp_path / "file"], "is a file")


def test_unknown_commands_and_families(capsys):
    fails(capsys, ["train", "nofamily"], "nofamily", "reasoner")
    fails(capsys, ["eval", "nofamily"], "nofamily")
    fails(capsys, ["nocommand"], "nocommand")
    fails(capsys, ["train"], "FAMILY")
    fails(capsys, [], "COMMAND")
    fails(capsys, ["list", "extra"], "extra")
    fails(capsys, ["patch"], "model")
    fails(capsys, ["patch", "analysis", "reasoner"], "unrecognized arguments: reasoner")


# ---------------------------------------------------------------- checkpoints
def test_a_run_is_never_overwritten_and_a_corrupt_state_is_one_line(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "act", *TINY_ACT, "--out", str(run)]) == 0
    capsys.readouterr()
    line = fails(capsys, ["train", "act", *TINY_ACT, "--out", run], str(run), "--resume", "--overwrite")
    assert "already holds a run" in line
    assert main(["train", "act", *TINY_ACT, "--out", str(run), "--overwrite"]) == 0
    capsys.readouterr()
    (run / "train_state.json").write_text('{"step": ')
    fails(capsys, ["train", "act", *TINY_ACT, "--out", run, "--resume"], "train_state.json")
    (run / "train_state.json").write_text("[1, 2]")
    fails(capsys, ["train", "act", *TINY_ACT, "--out", run, "--resume"], "train_state.json")
    # the same folder with other model options cannot be resumed
    (run / "train_state.json").unlink()
    (run / "train_state.json").write_text("{}")
    fails(capsys, ["train", "act", *TINY_ACT, "--hidden", "12", "--out", run, "--resume"], "config")


def test_bad_checkpoints_are_one_line_and_never_import_their_class(capsys, bad_checkpoints):
    expected = {"int": "found int", "null": "found NoneType", "class-int": "'class'", "corrupt": "corrupt JSON",
                "foreign": "not allowed"}
    for name, folder in bad_checkpoints.items():
        fails(capsys, ["patch", folder], "config.json", expected[name])
        fails(capsys, ["codebook", folder, "--n", "2"], "config.json", expected[name])
        fails(capsys, ["eval", "reasoner", "--models", folder], "config.json", expected[name])
        fails(capsys, ["eval", "act", "--models", folder], "config.json")
        fails(capsys, ["eval", "warp", "--models", folder], "config.json")
        fails(capsys, ["eval", "gain", "--model", folder], "config.json")
    assert "antigravity" not in sys.modules


def test_unknown_models_and_wrong_families(capsys, tmp_path):
    out = ["--out", tmp_path / "o"]
    for verb in ("patch", "attribute", "probe", "codebook"):
        fails(capsys, [verb, "no-such-model", *out], "no-such-model", "zoo models")
    fails(capsys, ["patch", "gain-v1", *out], "GainCircuit")
    fails(capsys, ["eval", "reasoner", "--models", "no-such-model", *out], "no-such-model")
    fails(capsys, ["eval", "reasoner", "--models", "act-parity", *out], "--models", "act-parity")
    fails(capsys, ["eval", "act", "--models", "reasoner", *out], "--models", "reasoner")
    fails(capsys, ["eval", "warp", "--models", "reasoner", *out], "--models", "reasoner")
    fails(capsys, ["eval", "gain", "--model", "reasoner", *out], "GainCircuit")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------- analyses
def test_analysis_values_are_checked_while_parsing(capsys, tmp_path):
    cases = [(["--n", "0"], "--n"), (["--n", "-3"], "--n"), (["--threads", "-1"], "--threads"),
             (["--seed", "-4"], "--seed"), (["--nodes", "0"], "--nodes"), (["--out", ""], "--out"),
             (["--seed", "x"], "--seed")]
    sites = [(["--positions", "x"], "--positions"), (["--positions", "-1"], "--positions"),
             (["--heads", "1,a"], "--heads"), (["--sites", ""], "--sites"), (["--ablation", "noise"], "--ablation")]
    for verb, extra in [("patch", sites + [(["--memory-mb", "0"], "--memory-mb"), (["--memory-mb", "1e400"], "--memory-mb")]),
                        ("attribute", sites),
                        ("probe", [(["--batch-size", "0"], "--batch-size"), (["--per-problem", "0"], "--per-problem"),
                                   (["--control-types", "x"], "--control-types")]),
                        ("codebook", [(["--k", "0"], "--k")])]:
        for args, flag in cases + extra:
            fails(capsys, [verb, "no-such-model", *args], flag)  # the option is rejected before the model loads


def test_sites_and_targets_are_checked_before_any_activation_is_collected(capsys, tmp_path, monkeypatch):
    import probes.reasoner

    def never(*args, **kwargs):
        raise AssertionError("activations were collected")

    monkeypatch.setattr(probes.reasoner, "collect", never)
    monkeypatch.setattr(probes.reasoner, "patching_setup", never)
    out = ["--out", tmp_path / "o"]
    fails(capsys, ["probe", "reasoner", "--targets", "foo", *out], "--targets", "foo", "value")
    fails(capsys, ["probe", "act-parity", "--targets", "value", *out], "--targets", "parity")
    fails(capsys, ["probe", "warp-msd", "--targets", "zz", *out], "--targets", "params")
    fails(capsys, ["probe", "reasoner", "--sites", "nothing.*", *out], "--sites", "nothing.*")
    fails(capsys, ["patch", "reasoner", "--sites", "nothing.*", *out], "--sites", "nothing.*")
    fails(capsys, ["attribute", "reasoner", "--sites", "steps.0.hook_inptu", *out], "--sites", "closest valid names")
    fails(capsys, ["patch", "reasoner", "--sites", "steps.999.hook_input", *out], "--sites", "0..")


def test_eval_values_and_output_folders(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    for family in ("reasoner", "act", "warp", "gain"):
        for args, flag in [(["--seed", "-1"], "--seed"), (["--out", ""], "--out"), (["--bogus"], "--bogus"),
                           (["--out", tmp_path / "file"], "is a file"), (["--out", tmp_path / "file" / "sub"], "file")]:
            fails(capsys, ["eval", family, *args], flag)
    fails(capsys, ["eval", "reasoner", "--n", "0"], "--n")
    fails(capsys, ["eval", "reasoner", "--sizes", "4,x"], "--sizes")
    fails(capsys, ["eval", "reasoner", "--sizes", "0"], "--sizes")
    fails(capsys, ["eval", "reasoner", "--models", ","], "--models")
    fails(capsys, ["eval", "reasoner", "--batch-size", "0"], "--batch-size")
    fails(capsys, ["eval", "act", "--batch-size", "0"], "--batch-size")
    fails(capsys, ["eval", "act", "--threads", "0"], "--threads")
    fails(capsys, ["eval", "warp", "--threads", "0"], "--threads")
    fails(capsys, ["eval", "warp", "--n", "-1"], "--n")
    fails(capsys, ["eval", "gain", "--n-samples", "0"], "--n-samples")
    fails(capsys, ["eval", "gain", "--biased", "biased adapter=zz"], "--biased", "adapter")
    fails(capsys, ["eval", "gain", "--solver", "magic"], "--solver")
    fails(capsys, ["patch", "reasoner", "--out", tmp_path / "file"], "--out", "is a file")


# ----------------------------------------------------------- other failures
def test_interrupt_and_os_errors_are_one_line(capsys, monkeypatch):
    import apps.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(apps.cli, "_list", interrupted)
    assert main(["list"]) == 130
    out, err = capsys.readouterr()
    assert err.strip() == "workbench: interrupted" and "Traceback" not in out

    def disk_full(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(apps.cli, "_list", disk_full)
    fails(capsys, ["list"], "No space left on device")


def test_a_bug_keeps_its_traceback(monkeypatch):
    import apps.cli

    def bug(args):
        raise AttributeError("a bug")

    monkeypatch.setattr(apps.cli, "_list", bug)
    with pytest.raises(AttributeError):
        main(["list"])


# ----------------------------------------------------------------------- help
def test_list_matches_the_zoo(capsys):
    import models

    assert main(["list"]) == 0
    assert capsys.readouterr().out.strip() == (models.available() or "(the zoo is empty)").strip()


@pytest.mark.parametrize("argv", [["train", "reasoner"], ["train", "act", "--preset", "parity"], ["train", "warp"],
                                  ["train", "gain"], ["eval", "reasoner"], ["eval", "act"], ["eval", "warp"],
                                  ["eval", "gain"], ["patch"], ["attribute"], ["probe"], ["codebook"]])
def test_help_states_each_default_once(argv, capsys):
    assert main([*argv, "--help"]) == 0
    text = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", text)
    assert len(options) > 3
    assert all(o.lower().count("default") <= 1 for o in options), [o for o in options if o.lower().count("default") > 1]
    assert "default: None" not in text and "(default: False)" not in text
    if argv[0] == "train" and argv[1] != "gain":
        assert "--overwrite" in text and "--resume" in text
        family = argv[1]
        preset = argv[3] if "--preset" in argv else "custom"
        assert f"default: runs/{family}-{preset}" in text


def test_train_help_lists_the_families(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f in text for f in ("reasoner", "act", "warp", "gain"))


def test_help_and_list_import_no_torch_and_take_under_a_second():
    code = ("import sys; from apps.cli import main; import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['--help']) == 0 and main(['list']) == 0 and main(['train', '--help']) == 0\n"
            "print(sorted(m for m in ('torch', 'numpy', 'probes', 'apps.commands.reasoner') if m in sys.modules))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "apps.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 0 and "train" in proc.stdout
    assert cpu < 1.0, f"workbench --help took {cpu:.2f} s of CPU"


def test_end_to_end_error_from_the_shell():
    proc = subprocess.run([sys.executable, "-m", "apps.cli", "train", "reasoner", "--batch-size", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "workbench: error: argument --batch-size: expected a whole number >= 1, got '0' "
        "(see 'workbench train reasoner --help')"]


def test_module_entry_of_the_analyses_reports_the_same_way(capsys):
    from apps.commands import analysis

    assert analysis.main(["patch", "reasoner", "--n", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m apps.commands.analysis: error: argument --n")


def test_failing_commands_write_nothing_into_the_folders_they_read(capsys, bad_checkpoints):
    for folder in bad_checkpoints.values():
        fails(capsys, ["train", "act", "--steps", "0", "--out", folder], "--steps")
        fails(capsys, ["train", "act", *TINY_ACT, "--out", folder], "already holds a run")
        assert [p.name for p in folder.iterdir()] == ["config.json"]


def test_the_examples_in_the_command_docstrings_parse():
    import ast
    import shlex

    from apps.cli import build_parser

    files = [ROOT / "apps" / "cli.py", *sorted((ROOT / "apps" / "commands").glob("*.py"))]
    examples = [line.strip() for f in files for line in (ast.get_docstring(ast.parse(f.read_text())) or "").splitlines()
                if line.strip().startswith("workbench ")]
    assert len(examples) >= 10
    for example in examples:
        argv = shlex.split(example, comments=True)[1:]
        assert build_parser(argv).parse_args(argv).func, example
