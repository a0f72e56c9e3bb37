"""Model-agnostic core of the workbench: loop-indexed hooks, tasks, training, checkpoints, analyses."""

from workbench.memory import keep_unless_disabled

# caches of every hook free gigabytes at a time: reuse that memory instead of re-faulting it
# from the kernel (workbench/memory.py; WORKBENCH_KEEP_FREED_MEMORY=0 leaves the allocator alone)
keep_unless_disabled()
