"""Capacity control: the NPV gate for Scale, and stop-loss. Plain Python, no grpc."""
