"""``DynamicsResult``: what every analysis of the loop-dynamics lab returns."""

from __future__ import annotations

from typing import Any, Optional

from workbench.results import Result


class DynamicsResult(Result):
    """A ``Result`` whose figure (one builder per analysis, ``workbench.dynamics_figures``) and summary come from here."""

    def figure(self, value: Optional[str] = None, **kwargs: Any):
        from workbench import dynamics_figures as df

        builders = {"iteration_lens": df.lens_figure, "convergence": df.convergence_figure,
                    "probe_transfer": df.transfer_figure, "basin": df.basin_figure,
                    "fixed_points": df.fixed_points_figure}
        return builders[self.kind](self, value=value, **kwargs)

    def summary(self, k: int = 10) -> str:
        m, lines = self.meta, [f"{self.kind}: {len(self.df)} rows"]
        if self.kind == "iteration_lens":
            t = self.tables["by_step"]
            t = t[t["layer"].isna()] if "layer" in t else t
            cols = [c for c in ("step", "match_final", "rank_final", "error_final", "accuracy", "rank_target",
                                "error_target") if c in t]
            lines.append(f"{m['steps']} steps, {m['items']} answers; per step:")
            lines.append(t[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        elif self.kind == "convergence":
            lines.append(f"{m['steps']} steps; fixed point (tolerance {m['tolerance']}) in {m['fixed_point_rate']:.1%} "
                         f"of {m['items']} states; median last update {m['median_last_update']:.3g}")
            if m.get("median_commit_step") is not None:
                lines.append(f"median commit step {m['median_commit_step']:.3g} (first step after which the decoded "
                             "answer never changes)")
            if "by_difficulty" in self.tables:
                lines.append(self.tables["by_difficulty"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        elif self.kind == "probe_transfer":
            d = self.df[self.df.train_step == self.df.test_step]
            lines.append(f"{m['metric']} of a probe fit at step i and tested at step j; diagonal (dotted: control):")
            lines.append(d[["train_step", "score", "control", "selectivity"]].to_string(
                index=False, float_format=lambda v: f"{v:.3f}"))
        elif self.kind == "basin":
            lines.append("return rate (final answer as in the unperturbed run) by step and eps:")
            g = self.tables["by_step"]
            lines.append(g.pivot_table(index="step", columns="eps", values="return_rate").to_string(
                float_format=lambda v: f"{v:.2f}"))
        elif self.kind == "fixed_points":
            lines.append(f"{len(self.df)} fixed points from {m['starts']} starts ({m['converged']} converged)")
            cols = [c for c in ("point", "residual", "norm", "starts", "spectral_radius", "max_real", "stability")
                    if c in self.df]
            lines.append(self.df[cols].head(k).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return "\n".join(lines)
