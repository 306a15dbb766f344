"""Fuzzing every method of RoutingService and grpc.health.v1 on one real loopback server.

Structurally valid requests with arbitrary field values (drawn from each message's descriptor, biased
toward the configured lanes, models and real decisions' ids so that some get deep into the handlers),
then raw bytes. Whatever arrives, the answer is OK or a deliberate status: never UNKNOWN or INTERNAL (an
exception that escaped), never DEADLINE_EXCEEDED (a hang). INVALID_ARGUMENT carries a google.rpc.BadRequest
whose every violation names a field path of the request (or `request`), in trailers a client takes;
RESOURCE_EXHAUSTED is the service's own (with a google.rpc.QuotaFailure) or the transport's refusal of
a request over its limit. A Route never answers with the router-error fallback, and nothing is logged
at ERROR: an exception the service catches counts as much as one that escapes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.config.load import load_config
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.health import lane_service_name
from orxaq_grpc.service.server import MAX_MESSAGE_BYTES
from tests.conftest import CONFIG_DIR, LoopbackServer

SERVICES = (
    pb.DESCRIPTOR.services_by_name["RoutingService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)
METHODS = {f"{s.name}/{m.name}": m for s in SERVICES for m in s.methods}
# The calls that change state go first, so that the reads after them render what they left behind.
WRITES = ("Route", "Report", "Scale", "SetStopLoss", "PauseLane", "CloseBreaker", "ReloadConfig")
ORDER = sorted(METHODS, key=lambda name: METHODS[name].name not in WRITES)
DEADLINE_S = 5.0  # far past any answer here: running into it is a hang
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run, in CI too
    database=None,
    suppress_health_check=[HealthCheck.too_slow],  # a few requests carry megabytes
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    running = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path_factory.mktemp("fuzz") / "data")
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """What the handlers catch and log (a failed round of checks, a router error) is a failure too."""
    with caplog.at_level(logging.WARNING):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, "\n".join(f"{r.name}: {r.getMessage()}" for r in errors[:5])


@pytest.fixture(scope="module")
def channel(server: LoopbackServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened


@dataclass(frozen=True)
class Known:
    values: dict[str, list[str]]  # good values by field name: what a caller that knows the service sends
    odd: dict[str, list[str]]  # values by field name that are nearly right (or right, but extreme)
    valid: dict[str, list[Message]]  # valid requests by message name, to vary a few fields of


@pytest.fixture(scope="module")
def known(server: LoopbackServer, channel: grpc.Channel) -> Known:
    config = server.running.handlers.workflow.config
    lanes = sorted(config.lanes)
    route = channel.unary_unary(
        "/orxaq.routing.v1.RoutingService/Route",
        request_serializer=pb.RouteRequest.SerializeToString,
        response_deserializer=pb.RouteDecision.FromString,
    )
    routes = [
        pb.RouteRequest(lane=lane, task=pb.Task(kind="test", title="Fix the flaky test")) for lane in lanes
    ]
    # Decisions enough that reports reach fresh ones, not only duplicates: some strong-or-weak.
    decisions = [
        route(
            pb.RouteRequest(lane=lane, task=pb.Task(title=f"Task {i}", value_usd=i * 2.5)), timeout=DEADLINE_S
        )
        for lane in lanes
        for i in range(8)
    ]
    models = sorted(m.id for m in config.models)
    daily = pb.Flows(daily=pb.DailyFlow(usd_per_day=100.0, horizon_days=7))
    values = {
        "lane": lanes,
        "group": sorted(config.policy.scale.groups),
        "model": models,
        "requested_model": models,
        "provider": sorted({m.provider for m in config.models}),
        "decision_id": [d.decision_id for d in decisions],
        "required_capabilities": sorted({c for m in config.models for c in m.capabilities}),
        "kind": ["test", "docs", "architecture", "refactor", "security"],
        "router": ["router-learned-0.55", "router-learned-1"],
        "service": ["", SERVICES[0].full_name, *(lane_service_name(lane) for lane in lanes)],
    }
    odd = {
        "router": [
            "router-learned-nan",
            "router-other-0.5",
            "router-learned-0." + "5" * 300,  # a threshold, written long
            "router-learned-0." + "5" * (MAX_MESSAGE_BYTES * 3 // 4),  # past the transport, or echoed past it
        ],
        # Just past limits.max_prompt_bytes in bytes, far under it in characters.
        "prompt": ["é" * (config.policy.limits.max_prompt_bytes // 2) + "a"],
        "lane": [*(lane.upper() for lane in lanes), f" {lanes[0]}", "\N{GRINNING FACE}" * 256],
        "required_capabilities": ["\N{GRINNING FACE}" * 64, "TOOLS"],
    }
    reports = [
        pb.ReportRequest(
            decision_id=d.decision_id,
            lane=d.lane,
            provider=d.provider,
            model=d.model,
            input_tokens=d.input_tokens,
            output_tokens=d.output_tokens,
            latency_s=12.0,
            outcome=pb.OUTCOME_SUCCESS,
            validation_passed=True,
        )
        for d in decisions
    ]
    scales = [
        pb.ScaleRequest(
            lane=lanes[0], current_parallel_agents=2, requested_parallel_agents=3, value=daily, cost=daily
        ),
        pb.ScaleRequest(group=values["group"][0], current_parallel_agents=1, requested_parallel_agents=2),
    ]
    valid: list[Message] = [
        *routes,
        pb.RouteBatchRequest(requests=routes),  # mutated, its requests go wrong one by one
        *reports,
        *scales,
        pb.WatchHealthRequest(heartbeat_s=1.0),
        *(health_pb2.HealthCheckRequest(service=name) for name in values["service"]),
    ]
    by_name: dict[str, list[Message]] = {}
    for request in valid:
        by_name.setdefault(request.DESCRIPTOR.full_name, []).append(request)
    return Known(values, odd, by_name)


# Strategies from descriptors -----------------------------------------------------------------------

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
DOUBLES = [0.0, -0.0, 0.5, 1.0, -1.0, -0.999999, 100.0, 100.5, 3650.0, 86_400.0, 1e12, 1e15, 1e300]
EDGES = [*DOUBLES, -1e300, 5e-324, -5e-324, math.inf, -math.inf, math.nan, 1.7976931348623157e308]
LENGTHS = [255, 256, 257, 1023, 1024, 1025, 5000]  # around the policy's text limits


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (0, 1, -1, 2, 8, 3650, lo, hi, lo + 1, hi - 1, 2**31 - 1) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(max(lo, 0), min(hi, 100_000)), st.integers(lo, hi))


def _any_string() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.text(max_size=24),
        st.text(st.characters(codec="utf-8"), max_size=80),
        st.builds(
            lambda c, n: c * n, st.sampled_from(["a", "é", "€", "😀", "\x00"]), st.sampled_from(LENGTHS)
        ),
    )


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


class Drafts:
    """Strategies for the messages of the contract. `wild`: any value of each field's type; otherwise
    values a well-meaning caller would send (known names, small numbers, enum members), so that the
    request gets past validation often enough to exercise what lies behind it."""

    def __init__(self, known: Known, wild: bool) -> None:
        self.known = known
        self.wild = wild

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        """Each field present or not; at most one member of each oneof (a proto3 `optional` field is a
        synthetic oneof of one: present or not like any other field)."""
        cls = GetMessageClass(descriptor)
        if depth > 4:
            return st.just(cls())
        real_oneofs = [o for o in descriptor.oneofs if len(o.fields) > 1 or not o.name.startswith("_")]
        in_oneof = {f.name for o in real_oneofs for f in o.fields}
        plain = {f.name: self._value(f, depth) for f in descriptor.fields if f.name not in in_oneof}
        chosen = [
            st.one_of(st.none(), *(st.tuples(st.just(f.name), self._value(f, depth)) for f in o.fields))
            for o in real_oneofs
        ]
        return st.builds(
            lambda fields, members: _build(cls, {**fields, **dict(m for m in members if m is not None)}),
            st.fixed_dictionaries({}, optional=plain),
            st.tuples(*chosen),
        )

    def _value(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """What one field holds: a value, a list of them, or a dict for a map."""
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            return st.dictionaries(self._single(key, depth), self._single(value, depth), max_size=4)
        one = self._single(field, depth)
        if not _repeated(field):
            return one
        few = st.lists(one, max_size=4)
        if not self.wild:
            return few
        return st.one_of(few, few, few, st.lists(one, min_size=60, max_size=70))  # past limits.max_labels

    def _single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if field.message_type is not None:
            return self.message(field.message_type, depth + 1)
        return self._wild(field) if self.wild else self._sensible(field)

    def _wild(self, field: FieldDescriptor) -> st.SearchStrategy[Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_STRING:
            if pool := self.known.values.get(field.name, []) + self.known.odd.get(field.name, []):
                return st.one_of(st.sampled_from(pool), _any_string())
            return _any_string()
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if kind == FieldDescriptor.TYPE_ENUM:
            numbers = [v.number for v in field.enum_type.values]
            return st.one_of(st.sampled_from(numbers), _ints(-(2**31), 2**31 - 1))  # unknown numbers too
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return st.one_of(st.sampled_from(EDGES), st.floats(-1e3, 1e3), st.floats())
        if kind == FieldDescriptor.TYPE_FLOAT:
            return st.floats(width=32)
        return _ints(*INT_RANGES[kind])

    def _sensible(self, field: FieldDescriptor) -> st.SearchStrategy[Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_STRING:
            if pool := self.known.values.get(field.name):
                good = st.sampled_from(pool)
                if odd := self.known.odd.get(field.name):
                    return st.one_of(good, good, good, st.sampled_from(odd))  # one in four nearly right
                return good
            return st.text(st.characters(codec="ascii", categories=["L", "N", "Zs"]), max_size=32)
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=8)
        if kind == FieldDescriptor.TYPE_ENUM:
            return st.sampled_from([v.number for v in field.enum_type.values])
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            # Never 0, which an absent field says already: 0 is no limit, no rate, no cost.
            return st.one_of(
                st.sampled_from([0.5, 1.0, 7.0, 70.0]), st.floats(0.01, 1.0), st.floats(0.01, 100.0)
            )
        return st.one_of(st.integers(0, 8), st.sampled_from([1000, 42_000]))


def requests(descriptor: Descriptor, known: Known) -> st.SearchStrategy[Message]:
    """Wild or well-meant requests, on their own or over a valid request (a few of its fields changed)."""
    drafts = [Drafts(known, wild).message(descriptor) for wild in (True, False)]
    if valid := known.valid.get(descriptor.full_name):
        drafts += [st.builds(_over, st.sampled_from(valid), draft) for draft in drafts]
    return st.one_of(drafts)


def _over(valid: Message, changes: Message) -> Message:
    """`valid` with the fields `changes` sets (scalars replaced, lists extended, messages merged)."""
    merged = type(valid)()
    merged.CopyFrom(valid)
    merged.MergeFrom(changes)
    return merged


def _build(cls: type[Message], fields: dict[str, Any]) -> Message:
    message = cls()
    for name, value in fields.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif _repeated(field):
            if field.message_type is not None:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


# Calling and judging ---------------------------------------------------------------------------------

_SEGMENT = re.compile(r"(\w+)(\[\d+\])?")


def names_a_field(descriptor: Descriptor, path: str) -> bool:
    """`path` is `request` or a dotted path of the message's fields, with `[i]` on repeated ones (always
    on the way through one, as the last segment when naming one element): `task.labels`,
    `task.labels[3]`, `value.schedule.flows[0].usd`."""
    if path == "request":
        return True
    current: Descriptor | None = descriptor
    segments = path.split(".")
    for i, segment in enumerate(segments):
        match = _SEGMENT.fullmatch(segment)
        if match is None or current is None or (field := current.fields_by_name.get(match[1])) is None:
            return False
        indexed = match[2] is not None
        if (indexed and not _repeated(field)) or (_repeated(field) and not indexed and i < len(segments) - 1):
            return False
        current = field.message_type
    return True


def call(channel: grpc.Channel, method: MethodDescriptor, payload: bytes) -> None:
    """Judges the answer; a stream is read to its first message, then cancelled."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, timeout=DEADLINE_S)
            next(stream, None)
            stream.cancel()
        else:
            answer = channel.unary_unary(path)(payload, timeout=DEADLINE_S)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        judge(error, method.input_type)
        return
    if method.output_type.full_name == pb.RouteDecision.DESCRIPTOR.full_name:
        # Route answers even when scoring raised, with the static fallback: an exception all the same.
        decision = pb.RouteDecision.FromString(answer)
        assert decision.fallback_reason != pb.FALLBACK_REASON_ROUTER_ERROR, decision.rationale
    if method.output_type.full_name == pb.RouteBatchResponse.DESCRIPTOR.full_name:
        # Each request is judged as Route would be: no router error, no INTERNAL or UNKNOWN error.
        for result in pb.RouteBatchResponse.FromString(answer).results:
            if result.WhichOneof("outcome") == "decision":
                assert result.decision.fallback_reason != pb.FALLBACK_REASON_ROUTER_ERROR, (
                    result.decision.rationale
                )
            else:
                assert result.error.code not in (
                    grpc.StatusCode.INTERNAL.value[0],
                    grpc.StatusCode.UNKNOWN.value[0],
                ), result.error.message


def judge(error: grpc.Call, request: Descriptor) -> None:
    code = error.code()
    assert code not in NEVER, f"{code.name}: {error.details()}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # The service's own refusals (budgets, ceilings) say which quota, and the transport refuses a
        # request over its limit before reading it. Neither is an answer too large to send (after the
        # decision was made and counted) nor trailers too large for the client to take.
        assert "Received message larger than max" in (error.details() or "") or _quota(error), error.details()
    if code != grpc.StatusCode.INVALID_ARGUMENT:
        return
    status = rpc_status.from_call(error)
    assert status is not None, f"INVALID_ARGUMENT without a google.rpc.Status: {error.details()}"
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details), "no BadRequest in the details"
    assert bad_request.field_violations, f"a BadRequest naming nothing: {error.details()}"
    for violation in bad_request.field_violations:
        assert names_a_field(request, violation.field), f"{violation.field!r}: no field of {request.name}"
    # Past gRPC's default 8 KiB the client's transport drops them, at random from there to twice that.
    assert trailer_bytes(error) <= 7 * 1024, f"{trailer_bytes(error)} bytes of trailers"


def _quota(error: grpc.Call) -> bool:
    """Whether the status names the quota it ran into."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # its details say another code: the client's transport put this one in
        return False
    quota = error_details_pb2.QuotaFailure()
    return bool(status and any(detail.Unpack(quota) for detail in status.details))


def set_stop_loss(channel: grpc.Channel, active: bool) -> None:
    channel.unary_unary("/orxaq.routing.v1.RoutingService/SetStopLoss")(
        pb.SetStopLossRequest(active=active, note="fuzz").SerializeToString(), timeout=DEADLINE_S
    )


def undo(channel: grpc.Channel, method: str) -> None:
    """What a write fuzzed leaves that would change the answers to the methods after it."""
    if method == "SetStopLoss":
        set_stop_loss(channel, active=False)  # routing is scored again for what follows
    elif method == "PauseLane":
        for lane in load_config(CONFIG_DIR).lanes:
            channel.unary_unary("/orxaq.routing.v1.RoutingService/PauseLane")(
                pb.PauseLaneRequest(lane=lane, paused=False, note="fuzz").SerializeToString(),
                timeout=DEADLINE_S,
            )


# The tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDER)
def test_any_request_message_is_answered_with_a_deliberate_status(
    channel: grpc.Channel, known: Known, name: str
) -> None:
    method = METHODS[name]
    drafted = requests(method.input_type, known)

    @FUZZ
    @given(request=drafted)
    def fuzz(request: Message) -> None:
        call(channel, method, request.SerializeToString())

    try:
        fuzz()
    finally:
        undo(channel, method.name)


def _mutated(requests: st.SearchStrategy[Message]) -> st.SearchStrategy[bytes]:
    """A valid message's bytes, cut short, with a byte changed or with bytes put in."""
    edits: list[Callable[[bytes, int, bytes], bytes]] = [
        lambda data, at, extra: data[:at],
        lambda data, at, extra: data[:at] + extra[:1] + data[at + 1 :],
        lambda data, at, extra: data[:at] + extra + data[at:],
    ]
    return st.builds(
        lambda message, edit, at, extra: edit(
            message.SerializeToString(), at % (len(message.SerializeToString()) + 1), extra
        ),
        requests,
        st.sampled_from(edits),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=8),
    )


@pytest.mark.parametrize("name", ORDER)
def test_any_bytes_are_answered_with_a_deliberate_status(
    channel: grpc.Channel, known: Known, name: str
) -> None:
    method = METHODS[name]
    payloads = st.one_of(st.binary(max_size=256), _mutated(requests(method.input_type, known)))

    @settings(FUZZ, max_examples=100)
    @given(payload=payloads)
    def fuzz(payload: bytes) -> None:
        call(channel, method, payload)

    try:
        fuzz()
    finally:
        undo(channel, method.name)


def test_the_field_path_check_follows_the_descriptor() -> None:
    route, scale = pb.RouteRequest.DESCRIPTOR, pb.ScaleRequest.DESCRIPTOR
    for path in ("request", "lane", "task.labels", "task.labels[3]", "constraints.required_capabilities[0]"):
        assert names_a_field(route, path), path
    for path in ("value.schedule.flows[0].usd", "uncertainty.confidence.confidence", "cost.daily"):
        assert names_a_field(scale, path), path
    for path in ("", "lanes", "lane[0]", "task.nope", "task.labels.x", "lane.x", "task..id"):
        assert not names_a_field(route, path), path
    assert not names_a_field(scale, "value.schedule.flows.usd")


# What fuzzing found, each as its smallest example ---------------------------------------------------


ROUTE = "/orxaq.routing.v1.RoutingService/Route"


def refusal(channel: grpc.Channel, method: str, request: Message) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method)(request.SerializeToString(), timeout=DEADLINE_S)
    assert isinstance(caught.value, grpc.Call)
    return caught.value


def violations(error: grpc.Call) -> dict[str, str]:
    """The BadRequest of an INVALID_ARGUMENT, as field: description."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rpc_status.from_call(error)
    bad_request = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(bad_request)
    return {v.field: v.description for v in bad_request.field_violations}


def trailer_bytes(error: grpc.Call) -> int:
    """The trailers as gRPC weighs them against its metadata limit: name + value + 32 an entry, the
    values as they travel (grpc-message percent-encoded, binary ones in base64)."""
    message = (error.details() or "").encode()
    encoded = sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in message)
    size = len("grpc-status") + 1 + 32 + len("grpc-message") + encoded + 32
    for key, value in error.trailing_metadata() or ():
        size += len(key) + (math.ceil(len(value) * 4 / 3) if key.endswith("-bin") else len(value)) + 32
    return size


def test_a_router_name_is_held_to_the_text_limit(server: LoopbackServer, channel: grpc.Channel) -> None:
    """A well-formed name of any length was taken and echoed twice in the decision (strong_or_weak.router
    and the rationale): with 3 MiB of it the answer was too large to send, RESOURCE_EXHAUSTED from grpc
    after the decision had been counted and its cost reserved."""
    limit = server.running.handlers.workflow.config.policy.limits.max_text_field_chars
    at_limit = "router-learned-0.5".ljust(limit, "5")
    answer = channel.unary_unary(ROUTE)(
        pb.RouteRequest(lane="codex", router=at_limit).SerializeToString(), timeout=DEADLINE_S
    )
    assert pb.RouteDecision.FromString(answer).model
    for router in (at_limit + "5", "router-learned-0." + "5" * (512 * 1024)):
        found = violations(refusal(channel, ROUTE, pb.RouteRequest(lane="codex", router=router)))
        assert found == {"router": f"is {len(router)} characters; at most {limit}"}


def test_violations_quoting_what_was_sent_stay_under_the_metadata_limit(server: LoopbackServer) -> None:
    """An unknown lane of 256 emoji and unknown capabilities of 64 are quoted in their descriptions, 4
    bytes a character (12 once grpc-message percent-encodes them, and the message travels twice): the
    trailers weighed 12.8 kB, past gRPC's default 8 KiB, and the client's own transport answered
    RESOURCE_EXHAUSTED ("received metadata size exceeds soft limit") most times, not the violations."""
    emoji = "\N{GRINNING FACE}"
    request = pb.RouteRequest(
        lane=emoji * 256,
        router=f"router-{emoji * 64}-0.5",
        constraints=pb.Constraints(required_capabilities=[emoji * 64] * 5),
    )
    with grpc.insecure_channel(server.address) as channel:
        errors = [refusal(channel, ROUTE, request) for _ in range(20)]
    assert {error.code() for error in errors} == {grpc.StatusCode.INVALID_ARGUMENT}
    found = violations(errors[0])
    fields = ["lane", "router", *(f"constraints.required_capabilities[{i}]" for i in range(5))]
    assert list(found) == fields
    assert "unknown lane" in found["lane"]
    assert trailer_bytes(errors[0]) <= 7 * 1024  # as the fuzzing checks every one
