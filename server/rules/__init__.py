"""Rules and alerts: the server watches every run, notifies (webhooks) and acts (commands)."""
