"""`orxaq-grpc route-batch FILE`'s input and output: JSON Lines of route requests in, one JSON result
per request out.

A line is one request, in either of two forms: the fields `orxaq-grpc route` takes, named as its flags
(`lane`, `task_id`, `kind`, `title`, `prompt` or `prompt_file`, `label`, `input_tokens`, ...; dashes or
underscores; `label` and `capability` a string or a list), or the proto's JSON form of a RouteRequest
(a line with `task`, `constraints`, `requested_model` or `router` is read as that). A line without a
lane takes the `--lane` given. Blank lines are skipped. A line that is not a request is a `Problem`
naming its line and field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from orxaq.routing.v1 import routing_pb2 as pb


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    field: str
    problem: str

    def text(self, path: str) -> str:
        return f"{path}:{self.line}: {self.field}: {self.problem}"


# The proto form's own top-level fields (a flat line never has them).
_PROTO_ONLY = frozenset({"task", "constraints", "requested_model", "requestedModel", "router"})
_STRINGS = ("lane", "task_id", "kind", "title", "prompt", "prompt_file", "model")
_WHOLES = ("input_tokens", "output_tokens")
_NUMBERS = ("difficulty", "value_usd", "max_cost", "min_quality", "max_latency")
_LISTS = ("label", "capability")
_CHOICES = {"objective": ("cost_speed", "balanced", "quality"), "profile": ("fast", "strong")}
_FLAT = frozenset((*_STRINGS, *_WHOLES, *_NUMBERS, *_LISTS, *_CHOICES, "explain"))
_NO_FIELD = re.compile(r'no field named "([^"]+)" at "RouteRequest\.?([\w.]*)"')


def read_requests(path: Path, lane: str = "") -> tuple[list[tuple[int, pb.RouteRequest]], list[Problem]]:
    """Every request of the file with its line number, and every problem (a file that cannot be read
    is one problem on line 0). `lane` is the lane of a flat line that names none."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(0, "file", f"cannot be read: {exc}")]
    return parse_requests(text, path.parent, lane)


def parse_requests(
    text: str, base: Path, lane: str = ""
) -> tuple[list[tuple[int, pb.RouteRequest]], list[Problem]]:
    """`read_requests` of text already read; a `prompt_file` is relative to `base`."""
    requests: list[tuple[int, pb.RouteRequest]] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        found = list(_request(line, number, base, lane))
        if found and isinstance(found[0], pb.RouteRequest):
            requests.append((number, found[0]))
        else:
            problems.extend(p for p in found if isinstance(p, Problem))
    return requests, problems


def _request(line: str, number: int, base: Path, lane: str) -> Iterator[pb.RouteRequest | Problem]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        yield Problem(number, "line", f"is not JSON: {exc.msg} at column {exc.colno}")
        return
    if not isinstance(value, dict):
        yield Problem(number, "line", f"is a JSON {type(value).__name__}, not an object")
        return
    if _PROTO_ONLY & value.keys():
        yield from _proto_form(value, number, lane)
    else:
        yield from _flat_form(value, number, base, lane)


def _proto_form(value: dict[str, Any], number: int, lane: str) -> Iterator[pb.RouteRequest | Problem]:
    request = pb.RouteRequest(lane=lane)  # the line's own lane, if it has one, replaces it
    try:
        json_format.ParseDict(value, request)
    except json_format.ParseError as exc:
        message = str(exc)
        if found := _NO_FIELD.search(message):
            name, at = found.groups()
            yield Problem(number, f"{at}.{name}" if at else name, "is not a field of RouteRequest")
        else:
            yield Problem(number, "request", message)
        return
    yield request


def _flat_form(
    value: dict[str, Any], number: int, base: Path, lane: str
) -> Iterator[pb.RouteRequest | Problem]:
    fields = {key.replace("-", "_"): item for key, item in value.items()}
    problems = [
        Problem(number, key, "is not a field `orxaq-grpc route` takes") for key in fields if key not in _FLAT
    ]
    for key in _STRINGS:
        if key in fields and not isinstance(fields[key], str):
            problems.append(Problem(number, key, "must be a string"))
    for key in _WHOLES:
        item = fields.get(key, 0)
        if isinstance(item, bool) or not isinstance(item, int):
            problems.append(Problem(number, key, "must be a whole number"))
        elif not -(2**63) <= item < 2**63:
            problems.append(Problem(number, key, "is out of range"))
    for key in _NUMBERS:
        item = fields.get(key)
        if item is not None and (isinstance(item, bool) or not isinstance(item, int | float)):
            problems.append(Problem(number, key, "must be a number"))
    for key in _LISTS:
        item = fields.get(key, [])
        items = [item] if isinstance(item, str) else item
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            problems.append(Problem(number, key, "must be a string or a list of strings"))
    for key, choices in _CHOICES.items():
        if key in fields and fields[key] not in choices:
            problems.append(Problem(number, key, f"must be one of {', '.join(choices)}"))
    if "explain" in fields and not isinstance(fields["explain"], bool):
        problems.append(Problem(number, "explain", "must be true or false"))
    if "prompt" in fields and "prompt_file" in fields:
        problems.append(Problem(number, "prompt_file", "is given with prompt: one of the two"))
    if not fields.get("lane", lane):
        problems.append(Problem(number, "lane", "is required (or --lane)"))
    if problems:
        yield from problems
        return
    prompt = fields.get("prompt", "")
    if "prompt_file" in fields:
        try:
            prompt = (base / fields["prompt_file"]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            yield Problem(number, "prompt_file", f"cannot be read: {exc}")
            return
    task = pb.Task(
        id=fields.get("task_id", ""),
        kind=fields.get("kind", ""),
        title=fields.get("title", ""),
        prompt=prompt,
        labels=_strings(fields.get("label", [])),
        input_tokens=fields.get("input_tokens", 0),
        output_tokens=fields.get("output_tokens", 0),
    )
    if fields.get("difficulty") is not None:
        task.difficulty = fields["difficulty"]
    if fields.get("value_usd") is not None:
        task.value_usd = fields["value_usd"]
    constraints = pb.Constraints(required_capabilities=_strings(fields.get("capability", [])))
    for name, key in (
        ("max_cost_usd", "max_cost"),
        ("min_quality", "min_quality"),
        ("max_latency_s", "max_latency"),
    ):
        if fields.get(key) is not None:
            setattr(constraints, name, fields[key])
    yield pb.RouteRequest(
        lane=fields.get("lane", lane),
        task=task,
        objective=f"OBJECTIVE_{fields.get('objective', 'unspecified').upper()}",  # enum fields take names
        profile=f"PROFILE_{fields.get('profile', 'unspecified').upper()}",
        requested_model=fields.get("model", ""),
        constraints=constraints,
        explain=fields.get("explain", False),
    )


def _strings(item: str | list[str]) -> list[str]:
    return [item] if isinstance(item, str) else item


def result_line(line: int, result: pb.RouteDecision | pb.RouteError) -> str:
    """One request's result as one line of JSON: its line in the file, and its decision or its error
    (the proto's JSON with the .proto's field names; an error's `status` names its code)."""
    if isinstance(result, pb.RouteDecision):
        return json.dumps({"line": line, "decision": _as_dict(result)})
    error = _as_dict(result)
    error["status"] = _status_name(result.code)
    return json.dumps({"line": line, "error": error})


def _as_dict(message: pb.RouteDecision | pb.RouteError) -> dict[str, Any]:
    found: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return found


def _status_name(code: int) -> str:
    import grpc

    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)
