"""Commands registered on `moagraph.cli.app` (filled in by its owner)."""
