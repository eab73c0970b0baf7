"""Turning command-line choices into a plan, with errors that name the valid choices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from cases import CASES, Case


class UsageError(Exception):
    """Bad user input: the CLI prints it and exits with status 2."""


def split_list(values: Iterable[str] | None) -> list[str] | None:
    """'a,b' 'c' -> ['a', 'b', 'c']; None stays None (= the default)."""
    if values is None:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out


def choose(kind: str, asked: list[str] | None, valid: Sequence[str], default: Sequence[str]) -> list[str]:
    if asked is None:
        return list(default)
    if not asked:
        raise UsageError(f"--{kind} is empty; valid {kind}: {', '.join(valid)}")
    bad = [a for a in asked if a not in valid]
    if bad:
        raise UsageError(f"unknown {kind} {', '.join(map(repr, bad))}; valid {kind}: {', '.join(valid)}")
    return list(dict.fromkeys(asked))


def select_cases(asked: list[str] | None, catalog: Sequence[Case] = CASES) -> list[Case]:
    """Names and tags, in catalog order; a tag selects every case carrying it."""
    if asked is None:
        return list(catalog)
    names = {c.name for c in catalog}
    tags = sorted({t for c in catalog for t in c.tags})
    bad = [a for a in asked if a not in names and a not in tags]
    if bad:
        raise UsageError(
            f"unknown case or tag {', '.join(map(repr, bad))}; valid tags: {', '.join(tags)}; "
            f"valid case names: {', '.join(c.name for c in catalog)}")
    wanted = set(asked)
    return [c for c in catalog if c.name in wanted or wanted & set(c.tags)]


def load_case_file(path: str) -> Case:
    """An .npz with `logits` (classes last), optional `targets` and `temperature` (and `probs`)."""
    p = Path(path)
    where = f"case file {path!r}"
    if not p.is_file():
        raise UsageError(f"{where} does not exist")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # not a zip, pickled objects, truncated...
        raise UsageError(f"{where} is not a readable .npz ({type(exc).__name__}: {exc})") from None
    allowed = {"logits", "targets", "temperature", "probs"}
    if "logits" not in arrays:
        raise UsageError(f"{where} has no 'logits' array (found: {', '.join(arrays) or 'nothing'}); "
                         f"expected keys: logits, optional targets, temperature, probs")
    extra = set(arrays) - allowed
    if extra:
        raise UsageError(f"{where} has unexpected arrays {sorted(extra)}; allowed: {sorted(allowed)}")
    logits = arrays["logits"]
    if logits.dtype.kind not in "fiu" or logits.ndim == 0 or logits.shape[-1] == 0:
        raise UsageError(f"{where}: 'logits' must be a real array with at least one class on its last "
                         f"axis, got dtype {logits.dtype} shape {logits.shape}")
    kwargs: dict = {}
    if "targets" in arrays:
        t = arrays["targets"]
        if t.dtype.kind not in "iu" or t.shape != logits.shape[:-1]:
            raise UsageError(f"{where}: 'targets' must be integers of shape {logits.shape[:-1]}, "
                             f"got {t.dtype} {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= logits.shape[-1]):
            raise UsageError(f"{where}: 'targets' must lie in [0, {logits.shape[-1]})")
        kwargs["targets"] = t
    if "temperature" in arrays:
        temp = arrays["temperature"]
        if temp.size != 1 or temp.dtype.kind not in "fiu" or not (np.isfinite(temp).all() and float(temp) > 0):
            raise UsageError(f"{where}: 'temperature' must be one positive finite number, got {temp!r}")
        kwargs["temperature"] = float(temp)
    if "probs" in arrays:
        pr = arrays["probs"]
        if pr.shape != logits.shape or pr.dtype.kind != "f":
            raise UsageError(f"{where}: 'probs' must be floats of the logits' shape {logits.shape}")
        kwargs["probs"] = pr
    return Case(name=p.stem, description=f"user logits from {p.name}", logits=logits.astype(np.float64),
                tags=("user",), **kwargs)
