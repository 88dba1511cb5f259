"""Config: where the Hydra configs live, the schemas of ftlab's groups, and the one type checker."""
