"""Study: what does each (step, layer) of the reasoner know about every variable?

For fresh problems at the training size, the residual stream after every layer of every
step is read at each variable's defining position, and one linear probe per site is fit
for three targets:

* ``value``: the variable's value in Z_p (logistic regression; chance = 1/p or so);
* ``computed``: whether the exact algorithm has filled the slot after this step (the
  model should know which values it already has);
* ``depth``: the variable's depth in the graph.

Each comes with the control task (random relabelling; ``--control-types variable`` gives
each variable name one random label, as Hewitt & Liang) and its selectivity. Writes
``values.csv`` (all targets, one row per site and target) and one HTML figure per target.

    python -m probes.reasoner_values --model reasoner --n 2000 --out out/probes/reasoner_values
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models import registry
from probes import reasoner as pr
from workbench.checkpoints import atomic_write
from workbench.sites import Sites

TARGETS = registry.get("reasoner").targets  # value, computed, depth


def run(model, n: int = 2000, *, n_nodes: int | None = None, per_problem: int = 4, seed: int = 0,
        control_types: str | None = None, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Collect activations and fit every target; returns one tidy table (site x target)."""
    problems = registry.sample(model, n, np.random.default_rng([seed, 1]), n_nodes=n_nodes)
    steps = model.cfg.steps_for_depth(max(p.depth for p in problems))
    acts = pr.collect(model, problems, Sites(pr.PROBE_SITES), batch_size=batch_size,
                      per_problem=per_problem, steps=steps, seed=seed, progress=progress)
    tables = [pr.STUDY.fit(model, acts, target, control=control_types or "none", seed=seed, progress=progress).df
              for target in TARGETS]
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    import models
    from workbench.figures import probe_map

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reasoner", help="zoo name or checkpoint folder")
    parser.add_argument("--n", type=int, default=2000, help="fresh problems")
    parser.add_argument("--nodes", type=int, default=None, help="graph size (default: the training size)")
    parser.add_argument("--per-problem", type=int, default=4, help="variables per problem")
    parser.add_argument("--control-types", choices=["none", "variable"], default="none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="out/probes/reasoner_values")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = models.load(args.model)
    table = run(model, args.n, n_nodes=args.nodes, per_problem=args.per_problem, seed=args.seed,
                control_types=None if args.control_types == "none" else "variable")
    out = Path(args.out)
    atomic_write(out / "values.csv", lambda tmp: table.to_csv(tmp, index=False))
    for target, df in table.groupby("target"):
        fig = probe_map(df).update_layout(title=f"Linear probes for '{target}' at every (step, layer)")
        atomic_write(out / f"{target}.html", lambda tmp, fig=fig: fig.write_html(tmp, include_plotlyjs="cdn"))
    from workbench.results import Result

    rows = []
    for target, df in table.groupby("target"):  # the best site that measures something (no constant target)
        res = Result("probe", df.reset_index(drop=True), "selectivity")
        best = res.best("accuracy")
        if best is not None:
            rows.append({"target": target, **best[["site", "accuracy", "control", "selectivity", "chance"]]})
        if res.left_out():
            print(f"{target}: {res.left_out()}")
    summary = pd.DataFrame(rows)
    print("best site per target (held-out accuracy; control task; selectivity; majority-class chance)")
    print(summary.round(3).to_string(index=False))
    print(f"wrote {out / 'values.csv'} and {', '.join(str(out / f'{t}.html') for t in TARGETS)}")


if __name__ == "__main__":
    main()
