"""Manifests, preprocessing, SSL features and the grain input pipeline."""
