"""The REST API under /api/v1: routes, their dependencies, request and answer models."""
