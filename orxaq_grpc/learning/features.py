"""What a decision saw of its task, kept with the decision so its outcome can be learned later, and
its hashed feature vector (the learning kernel's `features`).

The ledger keeps the text and tags, not the vector: a vector is ten times larger than the text that
gives it, and a model rebuilt from the ledger with other settings (more feature bits) needs the text.
"""

from __future__ import annotations

import json
import math
import zlib
from array import array
from dataclasses import dataclass

from orxaq_grpc import learning_kernel
from orxaq_grpc.frozen import frozen
from orxaq_grpc.kernel import Doubles, Int64s

# An encoded TaskFeatures: a format byte, then zlib (level 1) of the text and tags joined by NULs
# (_JOINED), or of JSON [text, tags] (_JSON) when one of them holds a NUL. _JSON was once the only
# format; _JOINED skips the JSON encoder, which cost the ledger's writer 8-15 µs a decision.
_JSON = b"\x01"
_JOINED = b"\x02"


@frozen
class TaskFeatures:
    """The task as the success model reads it: lower-cased title and prompt (cut to the policy's
    length), and tags such as `kind=bugfix`, `label=flaky`, `lane=codex`."""

    text: str
    tags: tuple[str, ...]

    def encode(self) -> bytes:
        joined = "\x00".join((self.text, *self.tags))
        if joined.count("\x00") == len(self.tags):  # no field holds a NUL: it splits back the same
            return _JOINED + zlib.compress(joined.encode(), 1)
        payload = json.dumps([self.text, list(self.tags)], ensure_ascii=False, separators=(",", ":"))
        return _JSON + zlib.compress(payload.encode(), 1)

    @classmethod
    def decode(cls, blob: bytes) -> TaskFeatures:
        """Raises ValueError on a blob this version cannot read (zlib.error on a corrupt one)."""
        if blob[:1] == _JOINED:
            text, *tags = zlib.decompress(blob[1:]).decode().split("\x00")
            return cls(text=text, tags=tuple(tags))
        if blob[:1] != _JSON:
            raise ValueError(f"unknown task-features encoding {blob[:1]!r}")
        text, tags = json.loads(zlib.decompress(blob[1:]))
        if not isinstance(text, str) or not isinstance(tags, list):
            raise ValueError("task features are not [text, tags]")
        return cls(text=text, tags=tuple(str(tag) for tag in tags))


def size_bucket(tokens: int) -> int:
    """Token counts by power of two: 1000 and 1100 tokens are the same size of task."""
    return 0 if tokens <= 0 else math.floor(math.log2(tokens))


def task_features(
    *,
    title: str,
    prompt: str,
    kind: str,
    labels: tuple[str, ...],
    lane: str,
    objective: str,
    input_tokens: int,
    output_tokens: int,
    max_text_chars: int,
) -> TaskFeatures:
    text = f"{title}\n{prompt}"[:max_text_chars].lower() if max_text_chars else ""
    tags = (
        f"kind={kind.lower()}",
        f"lane={lane}",
        f"objective={objective}",
        f"in={size_bucket(input_tokens)}",
        f"out={size_bucket(output_tokens)}",
        *(f"label={label.lower()}" for label in labels),
    )
    return TaskFeatures(text=text, tags=tags)


@dataclass(frozen=True, slots=True)
class Vector:
    """A task's sparse feature vector: the first `size` entries of indices and values."""

    indices: Int64s
    values: Doubles
    size: int
    dim: int
    norm2: float  # sum of squared values, counted as bias + unit text + one per tag

    @classmethod
    def of(cls, features: TaskFeatures, dim: int) -> Vector:
        text = features.text.encode()
        tags = tuple(tag.encode() for tag in features.tags)
        room = learning_kernel.capacity(text, tags)
        indices = array("q", bytes(8 * room))
        values = array("d", bytes(8 * room))
        size = learning_kernel.features(text, tags, dim, indices, values)
        # The text's part has unit norm whatever its length; collisions between tags are ignored, so
        # the prior's scale depends only on which kinds of feature a task has.
        norm2 = 1.0 + (1.0 if _has_token(features.text) else 0.0) + len(tags)
        return cls(indices=indices, values=values, size=size, dim=dim, norm2=norm2)


def _has_token(text: str) -> bool:
    """Whether the kernel finds a token in `text` (a byte of [A-Za-z0-9_] or any non-ASCII one)."""
    return any(not c.isascii() or c.isalnum() or c == "_" for c in text)
