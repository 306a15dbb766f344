"""The server's TLS: its certificate and key, and for mutual TLS the CA its clients' certificates
must chain to. The files are read again when they change (checked at each new connection's
handshake), so a renewed certificate is served without a restart."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from orxaq_grpc.access.addresses import is_loopback

log = logging.getLogger(__name__)


class TlsError(Exception):
    """A TLS file that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert: Path  # PEM certificate chain
    key: Path  # PEM private key
    client_ca: Path | None = None  # set: mutual TLS, a client certificate signed by it is required

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials that serve the files as they are now, and as they are after a change."""
        stamp = broken = self._stamp()
        initial = self._configuration()

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal stamp, broken
            now = self._stamp()
            if now in (stamp, broken):  # unchanged, or the same unusable files: said once already
                return None
            try:
                renewed = self._configuration()
            except TlsError as exc:  # half-written during a renewal: keep serving the last good one
                broken = now
                log.warning("TLS files changed but cannot be used yet, keeping the current ones: %s", exc)
                return None
            stamp = now
            log.info("TLS files changed: serving the new certificate from %s", self.cert)
            return renewed

        # The stubs say the fetcher returns a configuration; grpc documents None as "no change".
        return grpc.dynamic_ssl_server_credentials(
            initial,
            fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (read_pem(self.key, "private key"), read_pem(self.cert, "certificate"))
        client_ca = read_pem(self.client_ca, "client CA") if self.client_ca is not None else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=client_ca)

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        paths = [self.cert, self.key] + ([self.client_ca] if self.client_ca is not None else [])
        return tuple(_mtime(path) for path in paths)


def read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{what} {path}: cannot be read: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TlsError(f"{what} {path}: is not PEM (no -----BEGIN line)")
    return data


def _mtime(path: Path) -> tuple[int, int]:
    try:
        status = os.stat(path)
    except OSError:
        return (-1, -1)
    return (status.st_mtime_ns, status.st_size)


def exposure_problem(address: str, tls: ServerTls | None, credentials: bool, insecure: bool) -> str | None:
    """Why the service may not listen on `address` as configured, or None. Beyond loopback anyone
    on the network could steer the fleet, so that takes TLS and credentials, or `--insecure`."""
    if insecure or is_loopback(address):
        return None
    missing = [
        what
        for what, have in (("TLS (--tls-cert, --tls-key)", tls), ("credentials", credentials))
        if not have
    ]
    if not missing:
        return None
    return (
        f"{address} is not a loopback address and the service has no {' and no '.join(missing)} "
        "([access.credentials] in policy.toml); add them, listen on 127.0.0.1, or pass --insecure"
    )
