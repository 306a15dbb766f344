"""What a decision saw of its task, kept with the decision so its outcome can be learned later, and
its hashed feature vector (the learning kernel's `features`).

The ledger keeps the text and tags, not the vector: a vector is ten times larger than the text that
gives it, and a model rebuilt from the ledger with other settings (more feature bits) needs the text.
"""

from __future__ import annotations

import json
import math
import zlib

from orxaq_grpc import learning_kernel
from orxaq_grpc.frozen import frozen
from orxaq_grpc.kernel import Doubles, Int64s

# An encoded TaskFeatures: a format byte, then the text and tags joined by NULs, as UTF-8 (_PLAIN)
# or zlib (level 1) of it (_JOINED), or zlib of JSON [text, tags] (_JSON) when one of them holds a
# NUL. _JSON was once the only format; _JOINED skips the JSON encoder, which cost the ledger's writer
# 8-15 µs a decision; _PLAIN skips zlib below _COMPRESS_FROM_BYTES. All three are read.
_JSON = b"\x01"
_JOINED = b"\x02"
_PLAIN = b"\x03"
# zlib level 1 saves 35-45% of task text past ~400 bytes (under 20% below ~150), but at ~800 bytes
# it costs the ledger's writer 20-30 µs a decision on a 2-core VM, over half its CPU. Payloads
# under 2 KiB, what the default max_text_chars (1000) gives with its tags, even with some non-ASCII
# text, are stored plain (rows ~45% larger); longer ones, from a policy keeping more text, are
# compressed, where a decision saves kilobytes.
_COMPRESS_FROM_BYTES = 2048


@frozen
class TaskFeatures:
    """The task as the success model reads it: lower-cased title and prompt (cut to the policy's
    length), and tags such as `kind=bugfix`, `label=flaky`, `lane=codex`."""

    text: str
    tags: tuple[str, ...]

    def encode(self) -> bytes:
        if "\x00" in self.text or "\x00" in "".join(self.tags):  # NUL-joined, it would not split back
            payload = json.dumps([self.text, list(self.tags)], ensure_ascii=False, separators=(",", ":"))
            return _JSON + zlib.compress(payload.encode(), 1)
        data = "\x00".join((self.text, *self.tags)).encode()
        if len(data) < _COMPRESS_FROM_BYTES:
            return _PLAIN + data
        return _JOINED + zlib.compress(data, 1)

    @classmethod
    def decode(cls, blob: bytes) -> TaskFeatures:
        """Raises ValueError on a blob this version cannot read (zlib.error on a corrupt one)."""
        if blob[:1] == _PLAIN:
            text, *tags = blob[1:].decode().split("\x00")
            return cls(text=text, tags=tuple(tags))
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


@frozen  # read-only to mypy, built at a plain class's cost (one per learning decision)
class Vector:
    """A task's sparse feature vector: the first `size` entries of indices and values."""

    indices: Int64s
    values: Doubles
    size: int
    dim: int
    norm2: float  # sum of squared values, counted as bias + unit text + one per tag

    @classmethod
    def of(cls, features: TaskFeatures, dim: int) -> Vector:
        # Arrays of exactly the features' length: sized for the worst case (3 slots a text byte),
        # they cost more to allocate and zero than the hashing costs.
        indices, values, has_token = learning_kernel.vector(features.text, features.tags, dim)
        # The text's part has unit norm whatever its length; collisions between tags are ignored, so
        # the prior's scale depends only on which kinds of feature a task has.
        norm2 = 1.0 + (1.0 if has_token else 0.0) + len(features.tags)
        return cls(indices=indices, values=values, size=len(indices), dim=dim, norm2=norm2)
