"""The gRPC edge: converts messages to core objects and back, wires the server."""
