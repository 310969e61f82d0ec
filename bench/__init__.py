"""Benchmark harness: Ferryman against restic and borg on the reference workload."""
