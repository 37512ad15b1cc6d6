"""``sweep``: hyperparameter search with Optuna over ordinary ``fit`` runs."""
