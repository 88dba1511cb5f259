"""Training runs: one run from a composed config, recipe wiring, precision."""
