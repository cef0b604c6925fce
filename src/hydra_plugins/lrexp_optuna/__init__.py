"""lrexp's Hydra sweeper plugin: ``hydra/sweeper=lrexp_optuna`` (see optuna_sweeper.py)."""
