"""Who a caller is, from its bearer token, and whether it may make a call.

Three kinds of call: a lane's (Route and Report, for one lane), an operator's (Scale and
SetStopLoss: they steer the whole fleet) and a read (Health, WatchHealth, Economics, the gRPC
health and reflection services). A lane credential makes its own lane's calls and reads; an
operator credential makes every call. Reads are open to anyone unless policy says `reads = "token"`.
With no credentials configured nothing is checked: the service answers whoever reaches it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from orxaq_grpc.config.model import AccessSettings, Credential, token_digest

LANE, OPERATOR = "lane", "operator"


class Need(enum.Enum):
    LANE = "a lane or operator token"
    OPERATOR = "an operator token"
    READ = "a token"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a call was admitted for: its credential's name, role and lane."""

    name: str
    role: str  # LANE, OPERATOR, or OPEN when nothing is checked
    lane: str = ""

    @property
    def is_lane(self) -> bool:
        return self.role == LANE


OPEN = Principal(name="", role="open")  # the caller when no credentials are configured
ANONYMOUS = Principal(name="", role="anonymous")  # a read without a token, where reads are open


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call may not go ahead: `unauthenticated` (no token or an unknown one) or not (a known
    caller asking for what its role does not allow). `reason` is a stable upper-case word."""

    unauthenticated: bool
    reason: str
    message: str
    required: Need


class Gatekeeper:
    """Checks calls against one config's credentials (a reload builds a new one)."""

    def __init__(self, access: AccessSettings) -> None:
        self.access = access
        self._by_digest: dict[bytes, Credential] = {c.digest: c for c in access.credentials}

    def admit(self, need: Need, token: str | None, lane: str | None = None) -> Principal | Refusal:
        """The caller, or why it may not. `lane` is the lane a LANE call names (None when unknown)."""
        if not self.access.enforced:
            return OPEN
        if token is None:
            if need is Need.READ and self.access.reads_open:
                return ANONYMOUS
            return Refusal(
                True, "CREDENTIALS_MISSING", f"needs {need.value}: send `authorization: Bearer <token>`", need
            )
        credential = self._by_digest.get(token_digest(token))
        if credential is None:
            return Refusal(
                True, "CREDENTIALS_UNKNOWN", "the bearer token is not one this service accepts", need
            )
        caller = Principal(name=credential.name, role=credential.role, lane=credential.lane)
        if caller.role == OPERATOR or need is Need.READ:
            return caller
        if need is Need.OPERATOR:
            return Refusal(
                False,
                "OPERATOR_REQUIRED",
                f"needs {need.value}; {caller.name!r} is lane {caller.lane!r}'s",
                need,
            )
        if lane is not None and lane != caller.lane:
            return Refusal(
                False,
                "OTHER_LANE",
                f"{caller.name!r} speaks for lane {caller.lane!r}, not {lane!r}",
                need,
            )
        return caller
