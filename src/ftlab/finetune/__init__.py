"""Fine-tuning policy: which parts of the backbone train when, and at which learning rate."""
