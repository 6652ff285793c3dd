"""The `callboard` command line."""
