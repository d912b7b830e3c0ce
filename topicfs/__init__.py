"""Topic Feature Store: shared settings, data contracts, table layouts and the CLI of every stage."""

__version__ = "0.1.0"
