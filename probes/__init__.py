"""Probing on cached activations (scikit-learn), and one script per study.

>>> import probes
>>> acts = probes.collect(model, batches, "steps.*.blocks.*.hook_resid_post")
>>> res = probes.fit(acts, "value", types="variable", groups="problem")

On the reasoner, ``probes.reasoner.collect(model, problems, sites)`` gives the same rows as
``probes.collect`` over ``probes.reasoner.batches``, without running the steps after a problem settles
or, with causal attention, the tokens after the last position kept.

One study per model family (``probes.study.Study``: patching setup, activation collection,
probe targets, codebook report) lives in the family's module as ``STUDY``
(``probes.reasoner``, ``probes.act``, ``probes.warp``); ``probes.study.of(model)`` finds the one
the model registry (``models.registry``) names for the model's family:

>>> from probes import study
>>> s = study.of(model)
>>> acts = s.collect(model, n=500, seed=0)
>>> res = s.fit(model, acts, s.default_target or next(iter(s.targets(model))))

Scripts: ``python -m probes.reasoner_values`` (what each (step, layer) of the reasoner
knows about every variable's value, whether it is computed yet, and its depth).
"""

from probes.core import PROBES, Activations, ProbeBatch, collect, control_labels, fit

__all__ = ["PROBES", "Activations", "ProbeBatch", "collect", "control_labels", "fit"]
