"""Run folders: read their curves and configs, compare them, plot them."""
