"""Callboard: a self-hosted live dashboard and remote control for Keras training."""

__version__ = "0.1.0"
