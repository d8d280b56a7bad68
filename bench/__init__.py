"""Benchmarks for bundler: ``make bench`` runs ``python -m bench``."""
