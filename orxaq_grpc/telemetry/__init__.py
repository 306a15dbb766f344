"""Traces and metrics over OTLP from the standard OTEL_* variables (no grpc of its own at the core)."""
