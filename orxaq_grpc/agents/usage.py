"""The token usage (and cost, when stated) a coding agent prints on its stdout.

Each format as the tool documents it and its source emits it; the fields read here:

- Codex CLI, `codex exec --json` (openai/codex docs/exec.md, "JSON output mode"; the events of
  codex-rs/exec/src/event_processor_with_jsonl_output.rs): JSONL events, `turn.completed` with
  `usage` {`input_tokens`, `cached_input_tokens`, `output_tokens`}. The figures are the thread's
  running total (the processor copies `ThreadTokenUsage.total`; openai/codex#17539 says so too), so
  the last `turn.completed` holds the run's usage and adding the events up would count earlier turns
  again. `cached_input_tokens` is part of `input_tokens` (OpenAI's convention; the documented sample
  has 24763 input, 24448 of them cached). Codex prints neither a cost nor the model.
- Claude Code, `claude -p --output-format json` (one object; with `--verbose`, the array of every
  message, this object last) or `--output-format stream-json` (JSONL whose last line is this
  object), per the headless-mode docs and the Agent SDK's "Track cost and usage" (SDKResultMessage):
  `{"type": "result", "usage": {input_tokens, output_tokens, cache_read_input_tokens,
  cache_creation_input_tokens}, "total_cost_usd": ..., "modelUsage": {model: {..., costUSD}}}`,
  cumulative over the run's steps. Anthropic counts `input_tokens` apart from cache reads and cache
  writes, so the run's input is the sum of the three. `total_cost_usd` is Claude Code's own figure,
  computed from its bundled price table (the docs call it an estimate, not billing data). The
  stream's `system` line and each `assistant` message name the model; without the result line (a
  cut stream), the assistant messages' `message.usage`, one per message id, give a partial count.
- Gemini CLI, `gemini -p ... --output-format json` (google-gemini/gemini-cli docs/cli/headless.md;
  `SessionMetrics` in packages/core/src/telemetry/uiTelemetry.ts): `stats.models.<model>.tokens`
  {`prompt`, `candidates`, `cached`, `thoughts`, `tool`, `total`}, each summed over that model's
  requests, summed here over the models. `prompt` includes `cached`; thinking is billed as output;
  `tool` (tool-use prompt) tokens are input: total = prompt + candidates + thoughts + tool.
  `--output-format stream-json` ends with `{"type": "result", "stats": {total_tokens, input_tokens,
  output_tokens, cached, ...}}` (convertToStreamStats in packages/core/src/output/
  stream-json-formatter.ts: `total`, `prompt`, `candidates` and `cached` each summed over the
  models) and its `init` event names the model. `output_tokens` is candidates alone, thinking left
  out, while `total_tokens` counts it: the output read here is total_tokens - input_tokens when that
  is larger (tool-use prompt tokens, which the stream does not break out, fall in it too).

Agent output is untrusted and often untidy (log lines, a stream cut short, fields missing), so
`parse_usage` never raises: it returns None when no usage is found, and a `Usage` marked `partial`
when what it found is incomplete.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CODEX_JSONL = "codex-jsonl"
CLAUDE_JSON = "claude-json"
CLAUDE_STREAM_JSON = "claude-stream-json"
GEMINI_JSON = "gemini-json"
GEMINI_STREAM_JSON = "gemini-stream-json"


@dataclass(frozen=True, slots=True)
class Usage:
    """One agent run's tokens, in one convention whatever the agent's: `input_tokens` counts every
    input token, cache reads (`cached_input_tokens`) and cache writes (`cache_write_tokens`)
    included; `output_tokens` counts every output token, reasoning included."""

    source: str  # which format it was read from: CODEX_JSONL, CLAUDE_JSON, ...
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None  # the agent's own figure, when it states one
    model: str | None = None  # as the agent names it, when it does
    partial: bool = False  # a field was missing or malformed, or the output was cut short

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cached_input_tokens - self.cache_write_tokens)


def parse_usage(output: str | bytes) -> Usage | None:
    """The usage an agent printed, from its whole stdout; None when it printed none."""
    try:
        text = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else output
        return _interpret(_json_values(text))
    except Exception:  # a safety net: bad agent output must never stop the lane
        return None


def _json_values(text: str) -> list[tuple[Any, bool]]:
    """Every JSON object or array starting a line (after blanks), each with whether it was the
    output's only JSON value. A value may span lines (pretty-printed); lines that do not parse
    (logs, a cut last line) are passed over."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos, size = 0, len(text)
    while pos < size:
        end = text.find("\n", pos)
        end = size if end < 0 else end
        start = pos
        while start < end and text[start] in " \t\r\ufeff":
            start += 1
        if start < end and text[start] in "{[":
            try:
                value, stop = decoder.raw_decode(text, start)
            except (ValueError, RecursionError):
                pass
            else:
                found.append(value)
                after = text.find("\n", stop)
                pos = size if after < 0 else after + 1
                continue
        pos = end + 1
    return [(value, len(found) == 1) for value in found]


class _Fields:
    """Reads counts out of untrusted mappings, remembering whether anything was missing or bad."""

    def __init__(self) -> None:
        self.partial = False

    def count(self, mapping: object, key: str, required: bool = True) -> int:
        value = mapping.get(key) if isinstance(mapping, Mapping) else None
        if value is None:
            self.partial |= required
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.partial = True
            return 0
        if value < 0:
            self.partial = True
            return 0
        return int(value)


def _cost(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _interpret(values: list[tuple[Any, bool]]) -> Usage | None:
    events: list[tuple[dict[str, Any], bool]] = []  # (event, came as the whole output's JSON)
    for value, alone in values:
        if isinstance(value, dict):
            events.append((value, alone))
        elif isinstance(value, list):  # claude --output-format json --verbose: every message
            events.extend((item, True) for item in value if isinstance(item, dict))
    return (
        _claude(events)
        or _codex([event for event, _ in events])
        or _gemini_json([event for event, _ in events])
        or _gemini_stream([event for event, _ in events])
    )


def _claude(events: list[tuple[dict[str, Any], bool]]) -> Usage | None:
    results = [(e, alone) for e, alone in events if e.get("type") == "result" and "usage" in e]
    model = _claude_stated_model(event for event, _ in events)
    if results:
        result, alone = results[-1]
        fields = _Fields()
        usage = result.get("usage")
        if not isinstance(usage, Mapping):
            fields.partial = True
        uncached = fields.count(usage, "input_tokens")
        output = fields.count(usage, "output_tokens")
        cache_read = fields.count(usage, "cache_read_input_tokens", required=False)
        cache_write = fields.count(usage, "cache_creation_input_tokens", required=False)
        cost = _cost(result.get("total_cost_usd"))
        return Usage(
            source=CLAUDE_JSON if alone else CLAUDE_STREAM_JSON,
            input_tokens=uncached + cache_read + cache_write,
            output_tokens=output,
            cached_input_tokens=cache_read,
            cache_write_tokens=cache_write,
            cost_usd=cost,
            model=_claude_result_model(result) or model,
            partial=fields.partial or ("total_cost_usd" in result and cost is None),
        )
    # No result line (the stream was cut short): each assistant message's usage, once per id.
    fields, seen, found = _Fields(), set[str](), 0
    uncached = output = cache_read = cache_write = 0
    for event, _ in events:
        message = event.get("message")
        if event.get("type") != "assistant" or not isinstance(message, Mapping):
            continue
        usage, key = message.get("usage"), message.get("id")
        if not isinstance(usage, Mapping) or (isinstance(key, str) and key in seen):
            continue
        if isinstance(key, str):
            seen.add(key)  # parallel tool calls repeat one message's usage under its id
        found += 1
        uncached += fields.count(usage, "input_tokens")
        output += fields.count(usage, "output_tokens")
        cache_read += fields.count(usage, "cache_read_input_tokens", required=False)
        cache_write += fields.count(usage, "cache_creation_input_tokens", required=False)
    if not found:
        return None
    return Usage(
        source=CLAUDE_STREAM_JSON,
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=output,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        model=model,
        partial=True,
    )


def _claude_result_model(result: Mapping[str, Any]) -> str | None:
    """The model that cost the most in `modelUsage` (a run may use a small model on the side)."""
    per_model = result.get("modelUsage")
    if not isinstance(per_model, Mapping):
        return None
    ranked = [
        (_cost(figures.get("costUSD")) or 0.0, _Fields().count(figures, "outputTokens"), name)
        for name, figures in per_model.items()
        if isinstance(name, str) and isinstance(figures, Mapping)
    ]
    return max(ranked)[2] if ranked else None


def _claude_stated_model(events: Iterable[dict[str, Any]]) -> str | None:
    for event in events:
        kind = event.get("type")
        if kind == "system" and isinstance(event.get("model"), str):
            return str(event["model"])
        message = event.get("message")
        if kind == "assistant" and isinstance(message, Mapping) and isinstance(message.get("model"), str):
            return str(message["model"])
    return None


def _codex(events: list[dict[str, Any]]) -> Usage | None:
    completed = [
        i
        for i, e in enumerate(events)
        if e.get("type") == "turn.completed" and isinstance(e.get("usage"), Mapping)
    ]
    if not completed:
        return None
    last = completed[-1]
    fields = _Fields()
    usage = events[last]["usage"]
    input_tokens = fields.count(usage, "input_tokens")
    cached = fields.count(usage, "cached_input_tokens", required=False)
    output = fields.count(usage, "output_tokens")
    # A turn that started (or failed) after the last completed one spent tokens nobody counted.
    unfinished = any(e.get("type") in ("turn.started", "turn.failed") for e in events[last + 1 :])
    return Usage(
        source=CODEX_JSONL,
        input_tokens=input_tokens,
        output_tokens=output,
        cached_input_tokens=min(cached, input_tokens),
        partial=fields.partial or unfinished or cached > input_tokens,
    )


def _gemini_json(events: list[dict[str, Any]]) -> Usage | None:
    for event in reversed(events):
        stats = event.get("stats")
        models = stats.get("models") if isinstance(stats, Mapping) else None
        if not isinstance(models, Mapping) or not models:
            continue
        fields = _Fields()
        input_tokens = output = cached = 0
        largest: tuple[int, str] | None = None
        for name, figures in models.items():
            tokens = figures.get("tokens") if isinstance(figures, Mapping) else None
            if not isinstance(tokens, Mapping):
                fields.partial = True
                continue
            model_input = fields.count(tokens, "prompt") + fields.count(tokens, "tool", required=False)
            model_output = fields.count(tokens, "candidates") + fields.count(
                tokens, "thoughts", required=False
            )
            input_tokens += model_input
            output += model_output
            cached += fields.count(tokens, "cached", required=False)
            if isinstance(name, str) and (largest is None or model_input + model_output > largest[0]):
                largest = (model_input + model_output, name)
        return Usage(
            source=GEMINI_JSON,
            input_tokens=input_tokens,
            output_tokens=output,
            cached_input_tokens=min(cached, input_tokens),
            model=largest[1] if largest else None,
            partial=fields.partial or cached > input_tokens,
        )
    return None


def _gemini_stream(events: list[dict[str, Any]]) -> Usage | None:
    results = [e for e in events if e.get("type") == "result" and isinstance(e.get("stats"), Mapping)]
    if not results:
        return None
    stats = results[-1]["stats"]
    fields = _Fields()
    input_tokens = fields.count(stats, "input_tokens")
    output = fields.count(stats, "output_tokens")
    # output_tokens is the candidates alone; total_tokens counts the thoughts too (billed as output):
    # without it, the thinking is unknown and the count partial.
    total = fields.count(stats, "total_tokens")
    output = max(output, total - input_tokens)
    cached = fields.count(stats, "cached", required=False)
    model = next(
        (str(e["model"]) for e in events if e.get("type") == "init" and isinstance(e.get("model"), str)),
        None,
    )
    return Usage(
        source=GEMINI_STREAM_JSON,
        input_tokens=input_tokens,
        output_tokens=output,
        cached_input_tokens=min(cached, input_tokens),
        model=model,
        partial=fields.partial or cached > input_tokens,
    )
