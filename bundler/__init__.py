"""bundler: move billing customers between two installations of a billing system."""

__version__ = "0.1.0"
