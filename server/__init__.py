"""Callboard's web service: ingest, storage, query, live stream, control and dashboard."""
