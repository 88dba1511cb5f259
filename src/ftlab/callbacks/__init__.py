"""Lightning (and Hydra) callbacks: the fine-tune schedule, review, safeguards, summary, run comparison."""
