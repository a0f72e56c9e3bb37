"""Adapters between the models and the explorer: a model and plain inputs in, tidy data out.

Pages call these functions and hand their tables to the figure builders in ``apps.views``;
no page reaches into a model's internals itself. No Streamlit here, so tests call them
directly. Bad input raises ``ValueError`` naming the parameter and what is allowed.
"""
