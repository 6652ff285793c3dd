"""Aggregate: one metric over many runs, grouped, as mean, spread and range per bucket."""

from fastapi import APIRouter

router = APIRouter(tags=["dashboard"])
