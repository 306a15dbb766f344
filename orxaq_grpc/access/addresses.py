"""Whether an address stays on this machine: what decides if a token or an open port may go without TLS."""

from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """Whether host:port is on this machine only (127.0.0.0/8, ::1 or localhost). A client's
    `dns:`/`ipv4:` target prefixes are allowed; a name other than localhost is not loopback."""
    target = address.split(":", 1)[1] if address.startswith(("dns:", "ipv4:", "ipv6:")) else address
    host = target.lstrip("/").rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or empty (every interface): not loopback
        return False
