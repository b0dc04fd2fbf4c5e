"""The Fleet HTTP API (``fleet-tui api``): a FastAPI app over the service layer."""
