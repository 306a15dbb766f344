"""Keeping the catalog's prices true: compare them with a maintained price map and write the
differences back with their source and date (`orxaq-grpc prices check | update`).

The map is LiteLLM's `model_prices_and_context_window` JSON, read from the installed `litellm`
package (the optional `prices` extra) or from a file; the service itself never needs it.
"""
