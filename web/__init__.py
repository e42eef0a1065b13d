"""Templates and static files of the web UI (a data package; the code is linkwatch.webui)."""
