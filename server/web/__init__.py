"""The dashboard: pages, sign-in, templates and static assets."""
