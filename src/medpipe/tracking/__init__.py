"""Experiment tracking: MLflow runs, provenance tags and artifacts."""
