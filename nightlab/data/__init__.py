"""Data: the synthetic generator, real-dataset adapters, the manifest, and torch datasets."""
