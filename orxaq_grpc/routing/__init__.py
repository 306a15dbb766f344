"""Routing core: plain Python over plain data; imports no grpc or protobuf."""
