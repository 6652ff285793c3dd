"""The HTTP stack every answer passes through: middleware, rate limits, uvicorn options."""
