"""The text the CLI prints: a rate over nothing is "-", never a made-up 0.0%."""

from __future__ import annotations

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.render import economics_text


def test_rates_over_no_reports_or_no_decisions_read_as_a_dash() -> None:
    routed_only = pb.Figures(decisions=4, fallback_rate=0.25, estimated_tokens=8_000)
    reported = pb.Figures(
        reports=2,
        error_rate=0.5,
        acceptance_rate=1.0,
        reported_tokens=4_000,
        spend_usd=0.01,
        blended_usd_per_mtok=2.5,
        reported_input_tokens=3_000,
        cached_input_tokens=1_500,
        cache_share=0.5,
    )
    window = pb.EconomicsWindow(
        window="today",
        overall=routed_only,
        lanes=[
            pb.NamedFigures(name="codex", figures=routed_only),
            pb.NamedFigures(name="claude", figures=reported),
        ],
    )
    text = economics_text(pb.EconomicsResponse(windows=[window]), "today")
    codex = next(line.split() for line in text.splitlines() if line.startswith("codex"))
    claude = next(line.split() for line in text.splitlines() if line.startswith("claude"))
    # columns 6 on: $/1M, cached, fallback, router err, errors, first-time, accepted
    assert codex[6:] == ["-", "-", "25.0%", "0.0%", "-", "-", "-"]
    assert claude[6:] == ["2.500", "50.0%", "-", "-", "50.0%", "0.0%", "100.0%"]
    assert "(- of input cached)" in text.splitlines()[0]  # the overall window reported nothing
