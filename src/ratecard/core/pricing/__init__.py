"""Charge models: one small pure function per model, in a registry (placeholder)."""
