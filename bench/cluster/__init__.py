"""Cluster benchmarks: scale-out over capped links, and the dispatcher with a full queue."""
