"""orxaq-grpc: model-routing control plane for fleets of coding agents."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orxaq-grpc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
