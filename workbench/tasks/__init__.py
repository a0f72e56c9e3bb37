"""One module per task: config, sampler, text format and parser, exact solver."""
