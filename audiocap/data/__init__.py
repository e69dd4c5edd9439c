"""Datasets, verified downloads, validation and the feature cache (one module each; import them directly)."""
