"""Operator tooling: the softkey CLI, udev rules, VM e2e harness, benchmarks."""
