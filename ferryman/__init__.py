"""Ferryman: backup for unstructured data through general-purpose backup proxies."""

__version__ = "0.1.0"
