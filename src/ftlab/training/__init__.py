"""Training runs: preflight, wiring from config, atomic checkpoints."""
