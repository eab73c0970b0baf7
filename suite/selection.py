"""Turning command-line choices into a plan, with errors that name the valid choices."""

from __future__ import annotations

import stat
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


def listed(items: Iterable[str], most: int = 5) -> str:
    """'a, b, c, d, e and 19,995 more': one-line errors stay short however many names a file holds."""
    items = list(items)
    more = f" and {len(items) - most:,} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


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


def max_case_values() -> int:
    """The most values a case file may declare: what one worker and the supervisor fit in the memory
    available now (suite.memory, docs/memory.md). Checked before anything is decompressed: a small .npz
    can declare gigabytes. `run` checks again with its --jobs workers once the files are read."""
    from suite.memory import available_bytes, fitting_values

    return fitting_values(available_bytes(), 1)


def _npz_arrays(p: Path, where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array from the .npy headers inside the zip, read before any data is."""
    import zipfile

    from numpy.lib import format as npf

    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise UsageError(f"{where} is a single .npy array, not an .npz; save it with "
                             "numpy.savez(path, logits=..., targets=...)")
        raise UsageError(f"{where} is not an .npz file (the zip of .npy arrays that numpy.savez writes)")
    out = {}
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                name = info.filename
                if not name.endswith(".npy") or "/" in name:
                    raise UsageError(f"{where} holds {name!r}, which is not a .npy array of an .npz")
                with z.open(info) as f:
                    version = npf.read_magic(f)
                    reader = {(1, 0): npf.read_array_header_1_0, (2, 0): npf.read_array_header_2_0}.get(version)
                    if reader is None:
                        raise UsageError(f"{where}: array {name[:-4]!r} has .npy format version {version}; "
                                         "expected 1.0 or 2.0 (what numpy.savez writes for numeric arrays)")
                    shape, _, dtype = reader(f)
                out[name[:-4]] = (tuple(shape), dtype)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad zip or header: one line, no traceback
        raise UsageError(f"{where} is not a readable .npz ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
                         ) from None
    objects = [k for k, (_, d) in out.items() if d.hasobject]
    if objects:
        raise UsageError(f"{where}: {listed(map(repr, objects))} holds Python objects; only numeric arrays are "
                         "read (pickles are never loaded)")
    values = sum(int(np.prod(shape, dtype=np.float64)) for shape, _ in out.values())
    limit = max_case_values()
    if values > limit:
        from suite.memory import WORKER_PER_VALUE

        sizes = listed(f"{k} {'x'.join(map(str, sh)) or 'scalar'} {d}" for k, (sh, d) in out.items())
        raise UsageError(f"{where} declares {values:,} values ({sizes}); the limit is {limit:,} values on this "
                         f"machine (about {WORKER_PER_VALUE} bytes a value in a worker, even with --jobs 1: "
                         "docs/memory.md): use fewer rows (or split them into several files)")
    return out


def load_case_file(path: str) -> Case:
    """An .npz with `logits` (classes last), optional `targets` and `temperature` (and `probs`)."""
    p = Path(path)
    where = f"case file {path!r}"
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{where} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{where} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
                if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
        link = ", through a symbolic link" if p.is_symlink() else ""
        raise UsageError(f"{where} is not a regular file ({kind}{link})")
    _npz_arrays(p, where)  # refuses before decompressing anything
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data behind a good header
        raise UsageError(f"{where} is not a readable .npz ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    allowed = {"logits", "targets", "temperature", "probs"}
    if "logits" not in arrays:
        raise UsageError(f"{where} has no 'logits' array (found: {listed(arrays) or 'nothing'}); "
                         f"expected keys: logits, optional targets, temperature, probs")
    extra = set(arrays) - allowed
    if extra:
        raise UsageError(f"{where} has unexpected arrays {listed(map(repr, sorted(extra)))}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    logits = arrays["logits"]
    if logits.dtype.kind not in "fiu" or logits.ndim == 0 or logits.shape[-1] == 0 or logits.size == 0:
        raise UsageError(f"{where}: 'logits' must be a real array with at least one row and one class on its "
                         f"last axis, got dtype {logits.dtype} shape {logits.shape}")
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
        if not (np.isfinite(pr).all() and (pr >= 0).all()):
            raise UsageError(f"{where}: 'probs' must be finite and non-negative (probability targets); found "
                             f"{int(np.isnan(pr).sum())} NaN, {int(np.isinf(pr).sum())} infinite and "
                             f"{int((pr < 0).sum())} negative values")
        kwargs["probs"] = pr
    return Case(name=p.stem, description=f"user logits from {p.name}", logits=logits.astype(np.float64),
                tags=("user",), **kwargs)
