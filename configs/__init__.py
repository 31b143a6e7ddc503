"""Experiment configs (ml_collections); run them from the repository root."""
