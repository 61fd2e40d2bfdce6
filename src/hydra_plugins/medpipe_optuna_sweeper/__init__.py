"""medpipe's Hydra sweeper on current Optuna (hydra/sweeper=optuna_tpe)."""
