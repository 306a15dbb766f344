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


# A lane name a caller sent is shown up to this long in a refusal: it goes back in the trailers.
MAX_SHOWN_LANE = 64

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

    def identify(self, need: Need, token: str | None) -> Principal | Refusal:
        """Who is calling, from its token alone (before its request is read), or why it may not make
        a call that needs `need`. Where reads are open a read is answered whatever the token: a
        monitor with a stale one still reads."""
        if not self.access.enforced:
            return OPEN
        credential = self._by_digest.get(token_digest(token)) if token is not None else None
        if need is Need.READ and self.access.reads_open:
            return ANONYMOUS if credential is None else _principal(credential)
        if token is None:
            return Refusal(
                True, "CREDENTIALS_MISSING", f"needs {need.value}: send `authorization: Bearer <token>`", need
            )
        if credential is None:
            return Refusal(
                True, "CREDENTIALS_UNKNOWN", "the bearer token is not one this service accepts", need
            )
        caller = _principal(credential)
        if need is Need.OPERATOR and caller.role != OPERATOR:
            return Refusal(
                False,
                "OPERATOR_REQUIRED",
                f"needs {need.value}; {caller.name!r} is lane {caller.lane!r}'s",
                need,
            )
        return caller

    @staticmethod
    def speaks_for(caller: Principal, lane: str) -> Refusal | None:
        """Whether `caller` may make a lane's call (Route, Report) for `lane`: an operator may for
        any, a lane credential for its own only."""
        if not caller.is_lane or lane == caller.lane:
            return None
        shown = lane if len(lane) <= MAX_SHOWN_LANE else lane[:MAX_SHOWN_LANE] + "..."
        return Refusal(
            False, "OTHER_LANE", f"{caller.name!r} speaks for lane {caller.lane!r}, not {shown!r}", Need.LANE
        )


def _principal(credential: Credential) -> Principal:
    return Principal(name=credential.name, role=credential.role, lane=credential.lane)
