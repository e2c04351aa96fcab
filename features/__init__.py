"""Point-in-time churn features, labels and the data-quality report (Polars, no Prefect)."""
