"""What keeps oversized requests from costing the server memory: a receive limit derived from the
policy, so the transport refuses what no valid request could be before reading it whole, no
flow-control windows grown by bandwidth probing, and freed memory handed back after a burst.
benchmarks/hostile.py measures the memory itself."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.config.model import Config, Limits
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.scale.validation import MAX_SCHEDULE_FLOWS
from orxaq_grpc.service import memory
from orxaq_grpc.service.memory import release_free_memory
from orxaq_grpc.service.server import MAX_MESSAGE_BYTES, max_request_bytes, server_options
from tests.conftest import CONFIG_DIR, LoopbackServer

ROUTE = "/orxaq.routing.v1.RoutingService/Route"
WIDE = "\U0001f600"  # 4 bytes in UTF-8, the most a character takes


def largest_valid_route(config: Config) -> pb.RouteRequest:
    """A RouteRequest at every limit of the policy, each character as wide as UTF-8 makes one."""
    limits = config.policy.limits
    text = WIDE * limits.max_text_field_chars
    capabilities = sorted({c for m in config.models for c in m.capabilities})
    return pb.RouteRequest(
        lane=text,
        task=pb.Task(
            id=text,
            kind=text,
            title=WIDE * limits.max_title_chars,
            prompt=WIDE * (limits.max_prompt_bytes // 4) + "x" * (limits.max_prompt_bytes % 4),
            labels=[text] * limits.max_labels,
            input_tokens=limits.max_tokens,
            output_tokens=limits.max_tokens,
            difficulty=100.0,
            value_usd=1e12,
        ),
        objective=pb.OBJECTIVE_QUALITY,
        profile=pb.PROFILE_STRONG,
        requested_model=text,
        constraints=pb.Constraints(
            max_cost_usd=1e12, min_quality=100.0, max_latency_s=1e12, required_capabilities=capabilities
        ),
        explain=True,
        router=text,
    )


def largest_valid_scale() -> pb.ScaleRequest:
    schedule = pb.CashFlowSchedule(
        flows=[pb.CashFlow(day=1e9 + i, usd=-1e12 - i) for i in range(MAX_SCHEDULE_FLOWS)]
    )
    return pb.ScaleRequest(
        group="g" * 256,
        current_parallel_agents=2**31 - 1,
        requested_parallel_agents=2**31 - 1,
        current_subagents_per_agent=2**31 - 1,
        requested_subagents_per_agent=2**31 - 1,
        value=pb.Flows(schedule=schedule),
        cost=pb.Flows(schedule=schedule),
        uncertainty=pb.Uncertainty(confidence=pb.ConfidenceForm(uncertainty_ratio=0.5, confidence=0.5)),
        discount_rate=0.1,
        request_id="r" * 256,
    )


def with_limits(config: Config, **limits: int) -> Config:
    policy = dataclasses.replace(config.policy, limits=dataclasses.replace(config.policy.limits, **limits))
    return dataclasses.replace(config, policy=policy)


@pytest.mark.parametrize(
    "limits",
    [
        {},  # the shipped policy
        {"max_prompt_bytes": 3 * 1024 * 1024, "max_labels": 1000, "max_title_chars": 100_000},
        {"max_prompt_bytes": 1, "max_labels": 0, "max_title_chars": 1, "max_text_field_chars": 1},
    ],
)
def test_every_valid_request_fits_the_receive_limit(shipped_config: Config, limits: dict[str, int]) -> None:
    config = with_limits(shipped_config, **limits)
    limit = max_request_bytes(config.policy.limits)
    assert largest_valid_route(config).ByteSize() <= limit
    assert largest_valid_scale().ByteSize() <= limit


def test_the_receive_limit_follows_the_policy_not_the_send_limit(shipped_config: Config) -> None:
    limits: Limits = shipped_config.policy.limits
    limit = max_request_bytes(limits)
    assert limits.max_prompt_bytes < limit < 2 * limits.max_prompt_bytes < MAX_MESSAGE_BYTES
    options = dict(server_options(False, limit))
    assert options["grpc.max_receive_message_length"] == limit
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
    assert options["grpc.http2.bdp_probe"] == 0
    assert dict(server_options(True))["grpc.so_reuseport"] == 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    running = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path_factory.mktemp("data"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def route(server: LoopbackServer) -> Iterator[grpc.UnaryUnaryMultiCallable[bytes, bytes]]:
    """Route with raw bytes out and in."""
    with grpc.insecure_channel(server.address) as channel:
        yield channel.unary_unary(ROUTE)


def route_request_of(size: int) -> bytes:
    """A serialized RouteRequest of exactly `size` bytes (a megabyte or so), nearly all prompt."""
    prompt = size
    for _ in range(3):  # the length prefixes settle at once at this size
        message = pb.RouteRequest(lane="codex", task=pb.Task(title="big", prompt="x" * prompt))
        if (over := message.ByteSize() - size) == 0:
            return message.SerializeToString()
        prompt -= over
    raise AssertionError(f"no RouteRequest of {size} bytes")


def refusal(route: grpc.UnaryUnaryMultiCallable[bytes, bytes], request: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        route(request, timeout=30)
    return caught.value


def test_a_prompt_over_policy_at_the_receive_limit_names_the_prompt(
    shipped_config: Config, route: grpc.UnaryUnaryMultiCallable[bytes, bytes]
) -> None:
    error = refusal(route, route_request_of(max_request_bytes(shipped_config.policy.limits)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "task.prompt" in error.details()  # type: ignore[attr-defined]


def test_a_message_over_the_receive_limit_is_resource_exhausted(
    shipped_config: Config, route: grpc.UnaryUnaryMultiCallable[bytes, bytes]
) -> None:
    limit = max_request_bytes(shipped_config.policy.limits)
    for size in (limit + 1, 4 * 1024 * 1024):  # one byte over, and the 4 MiB the old limit took
        error = refusal(route, route_request_of(size))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, size  # type: ignore[attr-defined]
    assert route(route_request_of(2048), timeout=30)  # and the server still answers the next call


def _rss_mib() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) // 1024


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or memory._malloc_trim is None,
    reason="glibc's malloc_trim, and VmRSS from /proc",
)
def test_memory_freed_between_live_blocks_goes_back_to_the_system() -> None:
    """What a flood of refused requests leaves: freed blocks between a few that live on, which the
    allocator keeps. The guardrails' round returns them (release_free_memory)."""
    blocks = [bytearray(4096) for _ in range(60_000)]  # about 240 MiB
    survivors = blocks[::16]
    del blocks
    held = _rss_mib()
    assert release_free_memory()
    assert _rss_mib() < held - 100
    assert len(survivors) == 3750
