"""The loop-dynamics lab: what a looped model computes from one step to the next.

Five analyses, each returning a ``Result`` (a tidy DataFrame, extra tables, a Plotly figure)::

    iteration_lens(model, x, state_hooks=..., readout=...)      # the model's own readout after every step
    convergence(model, x, state_hooks=..., readout=...)          # update norms, fixed point?, commit step
    probe_transfer(acts, labels)                                 # a probe fit at step i, tested at step j
    basin(model, x, state_hooks=..., readout=..., eps=[...])     # perturb the state at step t: does it return?
    fixed_points(F, dim=d)                                       # fixed points of a cell h -> F(h), with stability

Steps count from 0 everywhere: step t is the t-th application of the loop, and "the state after
step t" is the activation at the hook that holds it (``steps.{t}.hook_out`` for a
``loop_indexed`` model). A model plugs in with two small adapters, the same for every analysis:

* ``state_hooks``: which hook holds the state after step t: a template with ``{t}``
  (``"steps.{t}.hook_resid_final"``, ``"time.0.ponder.{t}.hook_state"``), a function
  ``t -> name``, or the list of names in step order. The steps analysed are those that fired.
* ``readout``: ``state -> logits`` (``[batch, ..., classes]``; a last axis of size 1 is one binary
  logit, class 1 when > 0) or ``state -> predictions`` (an integer tensor ``[batch, ...]``).
  Every axis between the batch and the classes is an answer *position* (``pos`` in the tables).
  With ``answers="values"`` the readout gives real-valued answers ``[batch, ..., d]`` (a forecast,
  a solution vector), compared by distance: two agree when ``||a - b|| <= tol * max(1, ||b||)``.

plus ``forward_kwargs`` for the model's call (e.g. ``{"steps": 9}``). ``model`` is any
TransformerLens ``HookedRootModule`` with those hooks: the zoo's models, or any PyTorch model
wrapped by ``workbench.loops.loop_indexed``::

    >>> hooked = loop_indexed(model, loops={"steps": model.core}, max_steps=32)
    >>> lens = iteration_lens(hooked, x, state_hooks="steps.{t}.hook_out", readout=model.readout,
    ...                       target=y, forward_kwargs={"steps": 12})
    >>> lens.tables["by_step"]            # accuracy and rank of the final / true answer per step
    >>> lens.figure()

Norms are Euclidean over the state's last axis (one state vector per example and position).

The lab is one module per analysis (``lens``, ``convergence``, ``transfer``, ``basin``,
``fixed_points``), the adapters they share (``states``) and their result (``result``); everything
public is importable from here.
"""

from __future__ import annotations

from workbench.dynamics.basin import basin, spaced_steps

from workbench.dynamics.convergence import convergence
from workbench.dynamics.fixed_points import fixed_points
from workbench.dynamics.lens import iteration_lens
from workbench.dynamics.result import DynamicsResult
from workbench.dynamics.states import FIXED_ATOL, FIXED_RTOL, Readout, StateHooks  # noqa: F401 - the adapters' types
from workbench.dynamics.states import rollout_states, state_names
from workbench.dynamics.transfer import probe_transfer

__all__ = [
    "DynamicsResult",
    "basin",
    "convergence",
    "fixed_points",
    "iteration_lens",
    "probe_transfer",
    "rollout_states",
    "spaced_steps",
    "state_names",
]
