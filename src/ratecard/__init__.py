"""Ratecard: a self-hostable, multi-tenant billing and subscription engine."""

__version__ = "0.1.0"
