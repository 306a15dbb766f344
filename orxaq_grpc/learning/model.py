"""The success model: per model, the chance that its answer passes validation for a task.

Bayesian probit regression over hashed task features with a diagonal Gaussian posterior, updated one
outcome at a time by assumed-density filtering (the learning kernel's `update`). Every weight starts
at mean 0 and variance `prior_sd^2`; the model's catalog prior enters as a per-request offset chosen
so that a model with no outcomes predicts exactly its prior. The posterior variance is the model's
uncertainty: `certainty` says how much of the prior's variance the outcomes have removed for this
task. The same outcomes in the same order give the same model, bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import zipfile
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

from orxaq_grpc import learning_kernel
from orxaq_grpc.kernel import Floats
from orxaq_grpc.learning.features import Vector

FORMAT = 1  # of the saved file; another one is rebuilt from the ledger
NEUTRAL_PRIOR = 0.5  # for a model the catalog does not know
_PRIOR_RANGE = (0.01, 0.99)  # a prior of 0 or 1 would be infinitely sure
_STANDARD = NormalDist()


@dataclass(frozen=True, slots=True)
class Prediction:
    p: float  # the chance the answer passes validation
    prior: float  # the catalog's, before any outcome
    certainty: float  # 0 at the prior, towards 1 as outcomes narrow it for this task
    outcomes: int  # the model has learned from


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What a saved model must match to be loaded rather than rebuilt."""

    feature_bits: int
    prior_sd: float
    noise_sd: float


class SuccessModel:
    """Thread-safe: Route threads predict while the ledger follower learns."""

    def __init__(self, shape: ModelShape, priors: Mapping[str, float]) -> None:
        self.shape = shape
        self.dim = 1 << shape.feature_bits
        self.position = 0  # the ledger position of the last outcome learned
        self._prior_var = shape.prior_sd * shape.prior_sd
        self._beta2 = shape.noise_sd * shape.noise_sd
        self._priors: dict[str, float] = {}
        self._offsets: dict[tuple[str, float], float] = {}
        self._weights: dict[str, tuple[Floats, Floats]] = {}
        self._outcomes: dict[str, list[int]] = {}  # model: [passes, outcomes]
        self._lock = threading.Lock()
        self.set_priors(priors)

    def set_priors(self, priors: Mapping[str, float]) -> None:
        """Chances before any outcome (catalog quality / 100), replaced on a config reload."""
        low, high = _PRIOR_RANGE
        with self._lock:
            self._priors = {name: min(max(p, low), high) for name, p in priors.items()}
            self._offsets = {}

    def prior(self, model: str) -> float:
        return self._priors.get(model, NEUTRAL_PRIOR)

    def predict(self, model: str, vector: Vector) -> Prediction:
        offset = self._offset(model, vector.norm2)
        prior_v = self._prior_var * vector.norm2
        with self._lock:
            weights = self._weights.get(model)
            counts = self._outcomes.get(model)
            if weights is None:
                m, v = offset, prior_v
            else:
                m, v = learning_kernel.linear(*weights, vector.indices, vector.values, vector.size, offset)
        return Prediction(
            p=learning_kernel.probability(m, v, self._beta2),
            prior=self.prior(model),
            certainty=max(0.0, 1.0 - v / prior_v),
            outcomes=0 if counts is None else counts[1],
        )

    def learn(self, model: str, vector: Vector, passed: bool) -> None:
        offset = self._offset(model, vector.norm2)
        with self._lock:
            weights = self._weights.get(model)
            if weights is None:
                weights = self._weights[model] = _fresh(self.dim, self._prior_var)
                self._outcomes[model] = [0, 0]
            learning_kernel.update(
                *weights, vector.indices, vector.values, vector.size, offset, self._beta2, passed
            )
            counts = self._outcomes[model]
            counts[0] += passed
            counts[1] += 1

    def outcomes(self) -> dict[str, tuple[int, int]]:
        """Per model (passes, outcomes) learned from."""
        with self._lock:
            return {name: (c[0], c[1]) for name, c in sorted(self._outcomes.items())}

    def _offset(self, model: str, norm2: float) -> float:
        """The linear score that makes a model with untouched weights predict exactly its prior."""
        key = (model, norm2)
        offset = self._offsets.get(key)
        if offset is None:
            scale = math.sqrt(self._beta2 + self._prior_var * norm2)
            offset = self._offsets[key] = _STANDARD.inv_cdf(self.prior(model)) * scale
        return offset

    # --- persistence ---

    def save(self, path: Path) -> None:
        """Writes the model whole to `path` (replaced atomically: a reader sees the old or the new)."""
        with self._lock:
            meta = {
                "format": FORMAT,
                "feature_bits": self.shape.feature_bits,
                "prior_sd": self.shape.prior_sd,
                "noise_sd": self.shape.noise_sd,
                "position": self.position,
                "byteorder": sys.byteorder,
                "models": dict(self._outcomes),
            }
            blobs = {name: (mean.tobytes(), var.tobytes()) for name, (mean, var) in self._weights.items()}
        # Workers sharing a data directory save the same model: each through its own partial file.
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr("meta.json", json.dumps(meta, sort_keys=True))
            for number, (name, (mean, var)) in enumerate(sorted(blobs.items())):
                archive.writestr(f"{number}.model", name)
                archive.writestr(f"{number}.mean", mean)
                archive.writestr(f"{number}.var", var)
        partial.replace(path)

    @classmethod
    def load(cls, path: Path, shape: ModelShape, priors: Mapping[str, float]) -> SuccessModel | None:
        """The saved model, or None when there is none or it was saved with another shape or format
        (the caller rebuilds it from the ledger). Raises ValueError on a damaged file."""
        if not path.exists():
            return None
        try:
            with zipfile.ZipFile(path) as archive:
                meta = json.loads(archive.read("meta.json"))
                saved = ModelShape(meta["feature_bits"], meta["prior_sd"], meta["noise_sd"])
                if meta["format"] != FORMAT or saved != shape:
                    return None
                model = cls(shape, priors)
                model.position = int(meta["position"])
                swap = meta["byteorder"] != sys.byteorder
                number = 0
                while f"{number}.model" in archive.namelist():
                    name = archive.read(f"{number}.model").decode()
                    mean, var = array("f"), array("f")
                    mean.frombytes(archive.read(f"{number}.mean"))
                    var.frombytes(archive.read(f"{number}.var"))
                    if swap:
                        mean.byteswap()
                        var.byteswap()
                    if len(mean) != model.dim or len(var) != model.dim:
                        raise ValueError(f"weights of {name!r} have {len(mean)} entries, not {model.dim}")
                    model._weights[name] = (mean, var)
                    model._outcomes[name] = [int(n) for n in meta["models"][name]]
                    number += 1
        except (OSError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a success model this version can read ({exc})") from exc
        return model


def _fresh(dim: int, prior_var: float) -> tuple[Floats, Floats]:
    return array("f", bytes(4 * dim)), array("f", [prior_var]) * dim
