"""Start-up checks on the runtime the service depends on."""

from __future__ import annotations

from google.protobuf.internal import api_implementation

REQUIRED_PROTOBUF_BACKEND = "upb"


def protobuf_backend() -> str:
    return api_implementation.Type()


def check_protobuf_backend() -> None:
    """The pure-Python protobuf backend is an order of magnitude slower: refuse it."""
    backend = protobuf_backend()
    if backend != REQUIRED_PROTOBUF_BACKEND:
        raise RuntimeError(
            f"protobuf runs on its {backend!r} backend; orxaq-grpc needs {REQUIRED_PROTOBUF_BACKEND!r}. "
            "Unset PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION and install a protobuf wheel for this platform."
        )
