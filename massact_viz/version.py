"""The package version (read by run metadata and packaging)."""
__version__ = "0.1.0"
