"""Model-agnostic core of the workbench: loop-indexed hooks, tasks, training, checkpoints, analyses."""
