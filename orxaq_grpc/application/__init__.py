"""The application layer: the RPC workflow over the cores, knowing no transport (no grpc, no protobuf)."""
