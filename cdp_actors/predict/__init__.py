"""Predictive attributes: a snapshot of profiles and events (Parquet), features as of a cutoff, a gradient-boosted
propensity model, its evaluation and report, a model registry, and scores written back as user attributes."""
