"""Study: re-find the recursive reasoner's circuit, then recover each problem's graph from it.

Four analyses, each a function returning a ``Result`` (a tidy ``df`` and a ``figure()``):

1. ``head_roles``: for every step, layer and head, the attention mass from each defining
   (right-hand) slot to its own operand slots ("gather", and per operand slot
   ``gather_1..3`` counted from the left, over nodes with two or more operands), to its
   parents' definitions, to itself and elsewhere; and from each operand slot to its
   variable's definition ("lookup", the induction route), to itself and elsewhere.
   ``tables["heads"]`` names a role per head.
2. ``fourier_features``: at the step that writes a node with two or more operands, each
   layer's attention output, MLP output and residual at its defining slot, grouped by the
   node's true value: the share of variance the value explains and how it splits over the
   frequencies of Z_p (the first operand's value is the contrast); for two-operand nodes
   the 2-D spectrum over (a, b), split into axis (one operand alone), diagonal (features
   of a + b, as the paper reports for its layer-2 MLP), anti-diagonal (a - b) and the rest.
3. ``patching_map``: exact activation patching (``workbench.patching.patch``) of the
   residual stream at every step, layer and position; clean vs one leaf literal changed;
   metric = the deepest node's logit difference. Shows where the answer lives, step by step.
4. ``graph_recovery`` / ``graph_scores``: which positions each defining slot reads from, by
   attention at the step that writes it (thresholded; all heads, or the heads that
   ``head_roles`` calls gather / parent heads) and by changing each value code entering
   that step (discrete bottleneck only); mapped to variable -> variable edges and scored
   against the true graph (precision, recall, average precision) at several graph sizes.

    python -m probes.reasoner_circuit --model reasoner --n 200 --out out/reasoner_circuit

writes ``head_roles.csv``, ``head_summary.csv``, ``fourier.csv``, ``fourier_2d.csv``,
``patching.csv``, ``patching_summary.csv``, ``graph_scores.csv``, ``graph_edges.csv`` and
one page, ``report.html``. With the defaults, a model of the paper's interpreted size (d=128,
2 layers) at 32, 64 and 128 nodes takes about 20 minutes on one CPU thread and 2.5 GB, most of
it patching edges at 128 nodes (``--edge-patch-n 0`` skips them).

>>> import models
>>> from probes import reasoner_circuit as rc
>>> model = models.load("reasoner")
>>> problems = rc.sample_problems(model, 100)
>>> roles = rc.head_roles(model, problems)
>>> roles.tables["heads"][["layer", "head", "role"]]
>>> rc.graph_scores(model, sizes=[32, 64], n=16).figure()
"""

from probes.reasoner_circuit.common import (
    COMPONENTS, ROUTES, STATES, THRESHOLDS, CircuitResult, check_reasoner, sample_problems,
)
from probes.reasoner_circuit.fourier import fourier_features, pair_spectrum, value_spectrum
from probes.reasoner_circuit.graph import attention_edges, graph_recovery, graph_scores, patching_edges, score_edges
from probes.reasoner_circuit.heads import head_roles, route_masks
from probes.reasoner_circuit.patching_map import patching_map
from probes.reasoner_circuit.report import circuit_heads, findings, main, report, run, save

__all__ = [
    "CircuitResult", "check_reasoner", "sample_problems", "route_masks", "head_roles", "value_spectrum",
    "pair_spectrum", "fourier_features", "patching_map", "attention_edges", "patching_edges", "score_edges",
    "graph_recovery", "graph_scores", "circuit_heads", "findings", "report", "run", "save", "main", "COMPONENTS",
    "ROUTES", "STATES", "THRESHOLDS",
]
