"""device-operations Python worker."""

__version__ = "0.1.0"
