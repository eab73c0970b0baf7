"""One catalog entry: float64 logits before any casting, targets, temperature, convention."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

IEEE_CONVENTION = (
    "exact value of the op on z/T (z rounded to the tested dtype), rounded to the output dtype; "
    "where that is undefined the IEEE answer: NaN in a row poisons the row; a +inf logit makes "
    "softmax/log_softmax/CE NaN and logsumexp +inf; a fully -inf (masked) row makes softmax NaN "
    "(0/0; 'safe softmax' would give 0), logsumexp -inf and CE NaN; -inf entries get probability 0 "
    "and p = 0 targets contribute 0 (0 log 0 = 0)"
)


@dataclass(frozen=True)
class Case:
    """A named input. `logits` has classes on the last axis and any leading batch shape."""

    name: str
    description: str
    logits: np.ndarray
    tags: tuple[str, ...] = ()
    targets: np.ndarray | None = None
    probs: np.ndarray | None = None
    temperature: float = 1.0
    seed: int | None = None
    convention: str = IEEE_CONVENTION
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        logits = np.asarray(self.logits, dtype=np.float64)
        if logits.ndim == 0 or logits.shape[-1] == 0:
            raise ValueError(f"case {self.name!r}: logits need at least one class on the last axis")
        object.__setattr__(self, "logits", logits)
        batch = logits.shape[:-1]
        n = logits.shape[-1]
        if self.targets is None:
            rows = int(np.prod(batch, dtype=np.int64))
            targets = (np.arange(rows) % n).reshape(batch)
        else:
            targets = np.asarray(self.targets)
            if not np.issubdtype(targets.dtype, np.integer) or targets.shape != batch:
                raise ValueError(
                    f"case {self.name!r}: targets must be integers of shape {batch}, "
                    f"got {targets.dtype} {targets.shape}"
                )
            if targets.size and (targets.min() < 0 or targets.max() >= n):
                raise ValueError(f"case {self.name!r}: targets must lie in [0, {n})")
        object.__setattr__(self, "targets", targets.astype(np.int64))
        if self.probs is None:
            probs = np.zeros(logits.shape)
            np.put_along_axis(probs, self.targets[..., None], 1.0, axis=-1)
        else:
            probs = np.asarray(self.probs, dtype=np.float64)
            if probs.shape != logits.shape:
                raise ValueError(f"case {self.name!r}: probs must have the logits' shape")
        object.__setattr__(self, "probs", probs)
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"case {self.name!r}: temperature must be a positive finite number")
        if self.seed is None:
            object.__setattr__(self, "seed", zlib.crc32(self.name.encode()))

    @property
    def n_classes(self) -> int:
        return int(self.logits.shape[-1])

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.logits.shape[:-1], dtype=np.int64))

    def rng(self, salt: str = "") -> np.random.Generator:
        """Deterministic generator for this case (cotangents, random logits)."""
        return np.random.default_rng([int(self.seed), zlib.crc32(salt.encode())])
