"""One module per object the CLI manages; each exposes a typer ``app`` (or commands)."""
