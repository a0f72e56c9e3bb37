"""Probing on cached activations (scikit-learn), and one script per study.

>>> import probes
>>> acts = probes.collect(model, batches, "steps.*.blocks.*.hook_resid_post")
>>> res = probes.fit(acts, "value", types="variable", groups="problem")

On the reasoner, ``probes.reasoner.collect(model, problems, sites)`` gives the same rows as
``probes.collect`` over ``probes.reasoner.batches``, without running the steps after a problem settles.

Studies: ``python -m probes.reasoner_values`` (what each (step, layer) of the reasoner
knows about every variable's value, whether it is computed yet, and its depth).
"""

from probes.core import PROBES, Activations, ProbeBatch, collect, control_labels, fit

__all__ = ["PROBES", "Activations", "ProbeBatch", "collect", "control_labels", "fit"]
