"""Metering: ingestion, usage queries, rollups, late events, alerts and entitlements."""
