"""Reading the usage coding agents print: Codex, Claude Code and Gemini CLI, tidy and untidy."""

from __future__ import annotations

import json

import pytest

from orxaq_grpc.agents.usage import (
    CLAUDE_JSON,
    CLAUDE_STREAM_JSON,
    CODEX_JSONL,
    GEMINI_JSON,
    GEMINI_STREAM_JSON,
    Usage,
    parse_usage,
)

# `codex exec --json`, as in openai/codex docs/exec.md: turn.completed carries the thread's running total.
CODEX = "\n".join(
    json.dumps(event)
    for event in (
        {"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "**Looking**"}},
        {"type": "item.completed", "item": {"id": "item_3", "type": "agent_message", "text": "Done."}},
        {
            "type": "turn.completed",
            "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122},
        },
    )
)

# `claude -p --output-format json`: one result object.
CLAUDE_RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 1998,
    "num_turns": 3,
    "result": "Fixed the flaky test.",
    "session_id": "0e639165-79b1-4bd4-bb0f-4cb4c15115d4",
    "total_cost_usd": 0.0731,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 4100,
        "cache_read_input_tokens": 51200,
        "output_tokens": 1830,
        "service_tier": "standard",
    },
    "modelUsage": {
        "claude-haiku-4-5": {"inputTokens": 300, "outputTokens": 40, "costUSD": 0.0005},
        "claude-sonnet-4-5": {"inputTokens": 12, "outputTokens": 1790, "costUSD": 0.0726},
    },
}

# `claude -p --output-format stream-json --verbose`: init, assistant messages, then the result.
CLAUDE_STREAM = [
    {"type": "system", "subtype": "init", "model": "claude-sonnet-4-5", "session_id": "s1", "tools": []},
    {
        "type": "assistant",
        "message": {
            "id": "msg_1",
            "model": "claude-sonnet-4-5",
            "usage": {"input_tokens": 5, "output_tokens": 700, "cache_read_input_tokens": 20000},
        },
    },
    {  # a parallel tool use: the same message id repeats the same usage
        "type": "assistant",
        "message": {
            "id": "msg_1",
            "model": "claude-sonnet-4-5",
            "usage": {"input_tokens": 5, "output_tokens": 700, "cache_read_input_tokens": 20000},
        },
    },
    {
        "type": "assistant",
        "message": {
            "id": "msg_2",
            "model": "claude-sonnet-4-5",
            "usage": {
                "input_tokens": 7,
                "output_tokens": 1130,
                "cache_read_input_tokens": 31200,
                "cache_creation_input_tokens": 4100,
            },
        },
    },
    CLAUDE_RESULT,
]

# `gemini -p ... --output-format json` (docs/cli/headless.md; SessionMetrics), two models used.
GEMINI = {
    "session_id": "g1",
    "response": "Fixed.",
    "stats": {
        "models": {
            "gemini-2.5-pro": {
                "api": {"totalRequests": 2, "totalErrors": 0, "totalLatencyMs": 5053},
                "tokens": {
                    "input": 3676,
                    "prompt": 24939,
                    "candidates": 20,
                    "total": 25113,
                    "cached": 21263,
                    "thoughts": 154,
                    "tool": 0,
                },
            },
            "gemini-2.5-flash": {
                "api": {"totalRequests": 1, "totalErrors": 0, "totalLatencyMs": 800},
                "tokens": {
                    "input": 900,
                    "prompt": 900,
                    "candidates": 60,
                    "total": 1000,
                    "cached": 0,
                    "thoughts": 30,
                    "tool": 10,
                },
            },
        },
        "tools": {"totalCalls": 1, "totalSuccess": 1, "totalFail": 0, "byName": {}},
        "files": {"totalLinesAdded": 3, "totalLinesRemoved": 1},
    },
}

# `gemini -p ... --output-format stream-json`: init names the model, result carries summed stats.
GEMINI_STREAM = [
    {"type": "init", "timestamp": "2026-01-01T00:00:00Z", "session_id": "g2", "model": "gemini-2.5-pro"},
    {
        "type": "message",
        "timestamp": "2026-01-01T00:00:01Z",
        "role": "assistant",
        "content": "Ok",
        "delta": True,
    },
    {
        "type": "result",
        "timestamp": "2026-01-01T00:00:02Z",
        "status": "success",
        "stats": {
            "total_tokens": 25113,
            "input_tokens": 24939,
            "output_tokens": 20,
            "cached": 21263,
            "input": 3676,
            "duration_ms": 5053,
            "tool_calls": 1,
        },
    },
]


def jsonl(events: list[dict[str, object]]) -> str:
    return "\n".join(json.dumps(event) for event in events) + "\n"


def test_codex_jsonl() -> None:
    assert parse_usage(CODEX) == Usage(
        source=CODEX_JSONL, input_tokens=24763, output_tokens=122, cached_input_tokens=24448
    )


def test_codex_totals_are_running_totals_so_the_last_turn_counts() -> None:
    second = {
        "type": "turn.completed",
        "usage": {"input_tokens": 30000, "cached_input_tokens": 26000, "output_tokens": 400},
    }
    usage = parse_usage(CODEX + "\n" + jsonl([{"type": "turn.started"}, second]))
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (30000, 400)
    assert not usage.partial


def test_codex_turn_failed_after_the_last_completed_one_is_partial() -> None:
    failed = {"type": "turn.failed", "error": {"message": "stream disconnected"}}
    usage = parse_usage(CODEX + "\n" + jsonl([{"type": "turn.started"}, failed]))
    assert usage is not None and usage.partial and usage.input_tokens == 24763
    # A run whose only turn failed printed no usage at all.
    only_failed = jsonl([{"type": "thread.started", "thread_id": "t"}, {"type": "turn.started"}, failed])
    assert parse_usage(only_failed) is None


def test_claude_json_adds_cache_reads_and_writes_to_input() -> None:
    usage = parse_usage(json.dumps(CLAUDE_RESULT))
    assert usage == Usage(
        source=CLAUDE_JSON,
        input_tokens=12 + 4100 + 51200,
        output_tokens=1830,
        cached_input_tokens=51200,
        cache_write_tokens=4100,
        cost_usd=0.0731,
        model="claude-sonnet-4-5",  # the model that cost the most
    )
    assert usage.uncached_input_tokens == 12


def test_claude_json_verbose_array_and_pretty_printed() -> None:
    as_array = parse_usage(json.dumps(CLAUDE_STREAM))
    assert as_array is not None and as_array.source == CLAUDE_JSON and as_array.cost_usd == 0.0731
    pretty = parse_usage("Loaded settings.\n" + json.dumps(CLAUDE_RESULT, indent=2) + "\n")
    assert pretty is not None and pretty.output_tokens == 1830 and pretty.source == CLAUDE_JSON


def test_claude_stream_json_reads_the_result_line_not_the_steps() -> None:
    usage = parse_usage(jsonl(CLAUDE_STREAM))
    assert usage is not None and usage.source == CLAUDE_STREAM_JSON
    assert (usage.input_tokens, usage.output_tokens, usage.cost_usd) == (55312, 1830, 0.0731)
    assert not usage.partial


def test_claude_stream_cut_before_the_result_counts_each_message_once() -> None:
    cut = jsonl(CLAUDE_STREAM[:-1]) + json.dumps(CLAUDE_RESULT)[:80]  # the result line cut short
    usage = parse_usage(cut)
    assert usage == Usage(
        source=CLAUDE_STREAM_JSON,
        input_tokens=5 + 20000 + 7 + 31200 + 4100,
        output_tokens=700 + 1130,
        cached_input_tokens=51200,
        cache_write_tokens=4100,
        model="claude-sonnet-4-5",
        partial=True,
    )


def test_gemini_json_sums_models_with_thoughts_as_output_and_tool_as_input() -> None:
    usage = parse_usage(json.dumps(GEMINI, indent=2))
    assert usage == Usage(
        source=GEMINI_JSON,
        input_tokens=24939 + 900 + 10,
        output_tokens=20 + 154 + 60 + 30,
        cached_input_tokens=21263,
        model="gemini-2.5-pro",
    )
    # Every token of the documented total is counted once.
    assert usage.input_tokens + usage.output_tokens == 25113 + 1000


def test_gemini_stream_json() -> None:
    # output_tokens is the candidates alone (convertToStreamStats); total_tokens counts the 154
    # thinking tokens too, billed as output.
    assert parse_usage(jsonl(GEMINI_STREAM)) == Usage(
        source=GEMINI_STREAM_JSON,
        input_tokens=24939,
        output_tokens=25113 - 24939,
        cached_input_tokens=21263,
        model="gemini-2.5-pro",
    )


def test_gemini_stream_json_thinking_and_its_absence() -> None:
    result = GEMINI_STREAM[-1]
    stats = result["stats"]
    assert isinstance(stats, dict)
    no_thinking = [*GEMINI_STREAM[:-1], {**result, "stats": {**stats, "total_tokens": 24939 + 20}}]
    usage = parse_usage(jsonl(no_thinking))
    assert usage is not None and (usage.output_tokens, usage.partial) == (20, False)
    # A total below input + output (it should not be): output_tokens stands.
    short = [*GEMINI_STREAM[:-1], {**result, "stats": {**stats, "total_tokens": 100}}]
    usage = parse_usage(jsonl(short))
    assert usage is not None and (usage.output_tokens, usage.partial) == (20, False)
    # No total: the thinking is unknown, the count partial.
    without_total = {key: value for key, value in stats.items() if key != "total_tokens"}
    usage = parse_usage(jsonl([*GEMINI_STREAM[:-1], {**result, "stats": without_total}]))
    assert usage is not None and (usage.output_tokens, usage.partial) == (20, True)


def test_log_lines_and_a_cut_last_line_are_passed_over() -> None:
    noisy = (
        "[2026-01-01T00:00:00Z WARN codex] retrying request\n"
        + CODEX
        + "\nnot json {\n"
        + '{"type": "item.completed", "item": {"id": "item_9", "type": "agent_mes'  # cut short
    )
    usage = parse_usage(noisy)
    assert usage is not None and usage.input_tokens == 24763 and not usage.partial
    assert parse_usage(noisy.encode()) == usage  # bytes as the pipe gives them


@pytest.mark.parametrize(
    "output",
    [
        "",
        "Fixed the flaky test.\n",
        "{",
        "[1, 2, 3]",
        '{"type": "result"}',  # no usage in it
        '{"type": "turn.completed", "usage": 7}',
        '{"stats": {"models": {}}}',
        "[" * 100_000,  # deeper than the decoder recurses
        b"\xff\xfe\x00 binary \x80",
        "\n".join(["{" + '"a":' * 50] * 200),
    ],
)
def test_no_usage_is_none_and_never_an_exception(output: str | bytes) -> None:
    assert parse_usage(output) is None


def test_missing_or_malformed_fields_give_a_partial_usage() -> None:
    codex = parse_usage('{"type": "turn.completed", "usage": {"input_tokens": 100}}')
    assert codex == Usage(source=CODEX_JSONL, input_tokens=100, output_tokens=0, partial=True)
    claude = dict(CLAUDE_RESULT, total_cost_usd="a lot", usage={"input_tokens": -5, "output_tokens": True})
    usage = parse_usage(json.dumps(claude))
    assert usage is not None and usage.partial and usage.cost_usd is None
    assert (usage.input_tokens, usage.output_tokens) == (0, 0)
    nan_cost = json.dumps(dict(CLAUDE_RESULT, total_cost_usd=float("nan")))
    usage = parse_usage(nan_cost)
    assert usage is not None and usage.cost_usd is None and usage.partial
    gemini = {"stats": {"models": {"gemini-2.5-pro": {"tokens": {"prompt": 10}}, "broken": 3}}}
    usage = parse_usage(json.dumps(gemini))
    assert usage is not None and usage.partial and usage.input_tokens == 10


def test_optional_cache_fields_may_be_absent() -> None:
    old_claude = {"type": "result", "total_cost_usd": 0.008, "usage": {"input_tokens": 3, "output_tokens": 6}}
    usage = parse_usage(json.dumps(old_claude))
    assert usage == Usage(source=CLAUDE_JSON, input_tokens=3, output_tokens=6, cost_usd=0.008)
