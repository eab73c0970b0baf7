"""High-precision references, computed once per (case, dtype) from the very bits every implementation
receives (x = z / T correctly rounded to the dtype), so the reference grades the implementation and not
the input rounding.

Arithmetic is x86 extended precision (numpy long double, 64-bit significand: 2^11 times finer than
float64), with the Blanchard-Higham-Higham log1p formulation so that tiny outputs (log_softmax at
the largest logit, CE of a confident row) keep full relative accuracy. tests/test_reference.py
certifies it against mpmath at 50 digits. Where numpy's long double is no wider than float64 the
suite says so in env.json and the fp64 grades lose their margin.

Special values follow Case.convention (IEEE answers where the math is undefined).

Memory (docs/memory.md): a wide case's reference is computed and scored in blocks of rows
(CHUNK_VALUES values), and only one (op, pass) of it is held at a time, computed when a row first asks
for it; a small case's is computed at once and kept whole, with the scoring views it caches.
"""


from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cases import Case
from suite.dtypes import _quantize, divide_rounded, finfo, round_to, smallest_normal, spacing
from suite.error_model import row_terms, ulp_bound, units
from suite.formulas import analytic_vjp
from suite.ops import OPS, PASSES, ROW_OPS

LD = np.longdouble
EXTENDED = np.finfo(LD).nmant >= 63  # long double wider than float64 on this platform
# values per block of rows a wide reference is computed and scored in (a single wider row is one block): its
# temporaries (~40 long double or float64 arrays of a block) stay near 100 MiB whatever the case's size
CHUNK_VALUES = 2**18
KEYS: tuple[tuple[str, str], ...] = tuple((op, p) for op in OPS for p in PASSES)
PARTS = ("hi", "lo", "unit")  # what a wide reference's files hold per (op, pass), float64 each


def full_shaped(op: str, pass_: str) -> bool:
    """Whether (op, pass)'s output has the logits' shape (classes last) rather than one value per row."""
    return op in ROW_OPS or pass_ == "backward"


def blocks(a: np.ndarray, full: bool) -> list[np.ndarray]:
    """`a` as views of consecutive blocks of about CHUNK_VALUES values, in C order: whole rows of classes
    when `full` (the last axis is classes), else plain runs of values; a small or 0-d array is one block."""
    a = np.asarray(a)
    if a.size <= CHUNK_VALUES or a.ndim == 0:
        return [a]
    flat = a.reshape(-1, a.shape[-1]) if full else a.reshape(-1)
    step = max(1, CHUNK_VALUES // flat.shape[-1]) if full else CHUNK_VALUES
    return [flat[i:i + step] for i in range(0, flat.shape[0], step)]


def round_pair(hi: np.ndarray, lo: np.ndarray, name: str) -> np.ndarray:
    """The value hi + lo (a long double split as Expected.hi and .lo) rounded once to `name`, as float64:
    what suite.dtypes.round_to gives for the long double (its _round_long_double, given the split), in
    float64 arithmetic. hi rounds as the value does (numpy's float64 cast to float32 rounds once; its cast to
    float16 is slow where values under- or overflow and bfloat16's goes through float32, so those are
    suite.dtypes._quantize), except where hi is itself a
    midpoint of the dtype and lo != 0: then lo's sign picks the neighbour. A midpoint has its last
    52 - p float64 mantissa bits zero, so only such elements are looked at."""
    if name == "float64":
        return hi  # round_to: the long double cast to float64, which is hi
    fi = finfo(name)
    hi = np.asarray(hi)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        r = hi.astype(np.float32).astype(np.float64) if name == "float32" else _quantize(hi, name)[0]
        low_bits = np.uint64((1 << (52 - int(fi.nmant) - 1)) - 1)
        maybe = np.flatnonzero((hi.view(np.uint64) & low_bits == 0) & (lo != 0) & np.isfinite(hi))
        if maybe.size:
            h, l_ = hi.reshape(-1)[maybe], np.asarray(lo).reshape(-1)[maybe]
            rq, quantum = _quantize(h, name)
            scaled = h / quantum  # exact: a power of two
            fixed = np.where(scaled - np.floor(scaled) == 0.5, h + np.sign(l_) * (quantum / 2), rq)
            r = np.array(r)
            r.reshape(-1)[maybe] = np.where(np.abs(fixed) > float(fi.max), np.copysign(np.inf, fixed), fixed)
    return r


@dataclass(frozen=True)
class Expected:
    """The exact answer (long double) and, per element, the unit its error is graded in.

    `unit` is what one graded ULP is worth at each element: the ULP of the dtype at |exact| plus the
    share of the error model's input-driven terms (suite.error_model.units, docs/grading.md) that one
    of the `bound` ULPs must carry. The cached views are what scoring needs: the exact value as a
    double-double hi + lo (so that errors of float64 outputs are measured beyond float64; only for
    float64 results in the subnormal range does lo underflow, leaving +-0.5 ULP of slack), the value
    rounded to the output dtype, and the ULP size at the exact value. A wide Expected is scored block by
    block (`blocks`), each block caching its own views, so they never exist for the whole array at once.
    """

    value: np.ndarray | None  # long double; None where the exact value is held as hi + lo (of_parts)
    unit: np.ndarray
    dtype: str
    bound: float

    @classmethod
    def of_parts(cls, hi: np.ndarray, lo: np.ndarray, unit: np.ndarray, dtype: str, bound: float) -> Expected:
        """The exact value as the double-double hi + lo (the `hi` and `lo` views themselves): what a wide
        reference keeps, so that scoring it needs no long double arithmetic per implementation."""
        e = cls(None, unit, dtype, bound)
        e.__dict__.update(hi=hi, lo=lo)  # the cached views
        return e

    @property
    def shape(self) -> tuple[int, ...]:
        return np.shape(self.hi if self.value is None else self.value)

    def blocks(self, full: bool) -> list[Expected]:
        """This Expected in blocks of rows (suite.reference.blocks); itself when small."""
        if np.prod(self.shape) <= CHUNK_VALUES:
            return [self]
        unit = blocks(np.broadcast_to(self.unit, self.shape), full)
        if self.value is None:  # `want` kept whole (the same array as hi for float64): its blocks share it
            parts = [Expected.of_parts(h, lo, u, self.dtype, self.bound)
                     for h, lo, u in zip(blocks(self.hi, full), blocks(self.lo, full), unit, strict=True)]
            for part, w in zip(parts, blocks(self.want, full), strict=True):
                part.__dict__["want"] = w
            return parts
        return [Expected(v, u, self.dtype, self.bound) for v, u in zip(blocks(self.value, full), unit, strict=True)]

    @cached_property
    def hi(self) -> np.ndarray:
        return self.value.astype(np.float64)

    @cached_property
    def lo(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            lo = (self.value - self.hi.astype(LD)).astype(np.float64)
        return np.where(np.isfinite(lo), lo, 0.0)

    @cached_property
    def want(self) -> np.ndarray:
        """What the dtype can hold: the exact value correctly rounded, inf past the dtype's range."""
        if self.value is not None:
            return round_to(self.value, self.dtype)
        if self.dtype == "float64":
            return self.hi
        out = np.empty(self.shape)  # rounded block by block, kept: rounding to float16 and bfloat16 is slow
        for o, h, lo in zip(blocks(out, False), blocks(self.hi, False), blocks(self.lo, False), strict=True):
            o[...] = round_pair(h, lo, self.dtype)
        return out

    @cached_property
    def ulp_exact(self) -> np.ndarray:
        """ULP of the dtype at |exact| (inf where the exact value is not finite: no error there)."""
        return np.nan_to_num(spacing(self.hi, self.dtype), nan=np.inf)

    @cached_property
    def graded_unit(self) -> np.ndarray:
        """The unit of `ulp_err_scaled` (inf where the exact value is not finite)."""
        with np.errstate(invalid="ignore"):
            unit = np.broadcast_to(self.unit, self.hi.shape)
        return np.where(np.isfinite(self.hi) & np.isfinite(unit), unit, np.inf)

    @cached_property
    def rel_denominator(self) -> np.ndarray:
        """|exact|, with inf where it is 0 or not finite (no relative error defined there)."""
        a = np.abs(self.hi)
        return np.where((a > 0) & np.isfinite(a), a, np.inf)

    @cached_property
    def all_finite(self) -> bool:
        parts = self.blocks(False)
        if parts[0] is self:
            return bool(np.isfinite(self.want).all())
        return all(b.all_finite for b in parts)

    @cached_property
    def tiny(self) -> np.ndarray:
        """Non-zero results below the dtype's smallest normal: where flush-to-zero can bite."""
        return (self.want != 0) & (np.abs(self.want) < smallest_normal(self.dtype))


@dataclass(frozen=True)
class _Input:
    """What one table of references is computed from: the op's exact input (x, or z / T for the
    `temperature` table: `division`), targets, probs and cotangents, flattened to rows of classes."""

    x: np.ndarray  # float64 (exact in the dtype), (rows, n)
    T: float  # divides x exactly (long double) before the op: 1.0 but for the temperature table
    targets: np.ndarray  # (rows,)
    probs: np.ndarray  # float64, (rows, n)
    cotangents: dict[str, np.ndarray]  # per op, flattened like its output
    dtype: str
    grad_T: float  # the gradients are times 1 / grad_T (wrt z for `temperature`)
    division: bool  # the implementation rounds z / T itself
    batch: tuple[int, ...]

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    def block_rows(self) -> list[slice]:
        n = self.x.shape[1]
        if self.x.size <= CHUNK_VALUES:
            return [slice(0, self.rows)]
        step = max(1, CHUNK_VALUES // n)
        return [slice(i, i + step) for i in range(0, self.rows, step)]

    def exact_input(self, rows: slice) -> np.ndarray:
        x = self.x[rows].astype(LD)
        return x / LD(self.T) if self.T != 1.0 else x


class _Held:
    """Which computed Expecteds a Reference keeps: all of a small case's; of a wide case's, the last one
    asked for (tables share one _Held), so a worker holds one (op, pass) of a wide case at a time."""

    def __init__(self, keep_all: bool) -> None:
        self.keep_all = keep_all
        self.items: dict[tuple[str, str, str], Expected] = {}

    def get(self, key: tuple[str, str, str]) -> Expected | None:
        return self.items.get(key)

    def put(self, key: tuple[str, str, str], e: Expected) -> None:
        if not self.keep_all:
            self.items.clear()
        self.items[key] = e


class ExpectedTable(Mapping):
    """(op, pass) -> Expected of one input, computed on first use: every key in one pass over the rows
    (one forward pass serves every op, as the error model's terms do). A small case's are kept in memory;
    a wide case's are computed block by block and streamed to .npy files in `share` (the run's reference
    cache, so that other workers load them; a private temporary directory without one), from which the
    one asked for is loaded, the one held before it dropped first."""

    def __init__(self, source: _Input, tag: str, held: _Held, share: Path | None = None) -> None:
        self.source, self.tag, self.held, self.share = source, tag, held, share

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(KEYS)

    def __len__(self) -> int:
        return len(KEYS)

    def __getitem__(self, key: tuple[str, str]) -> Expected:
        if key not in KEYS:
            raise KeyError(key)
        got = self.held.get((self.tag, *key))
        if got is not None:
            return got
        if self.held.keep_all:
            for k, e in self._compute(None).items():
                self.held.put((self.tag, *k), e)
            return self.held.get((self.tag, *key))
        self.held.items.clear()  # one at a time: the held one goes first
        folder = self._folder()
        if not (folder / f"{self.tag}.done").exists():
            self._compute(folder)
        hi, lo, unit = (np.load(folder / f"{self.tag}.{key[0]}.{key[1]}.{part}.npy", allow_pickle=False)
                        for part in PARTS)
        e = Expected.of_parts(hi, lo, unit, self.source.dtype, ulp_bound(*key, self.source.x.shape[1]))
        self.held.put((self.tag, *key), e)
        return e

    def _folder(self) -> Path:
        if self.share is None:  # a private one, removed with this table
            import shutil
            import tempfile
            import weakref

            self.share = Path(tempfile.mkdtemp(prefix="softmax-suite-expected-"))
            weakref.finalize(self, shutil.rmtree, str(self.share), True)
        return self.share

    def _compute(self, folder: Path | None) -> dict[tuple[str, str], Expected]:
        """Exact op(x) and gradients (times 1 / T: wrt z when T != 1 is the impl's own division) and their
        graded units from the error model, row block by row block: into memory (folder None, returned) or
        appended to one .npy file per key and part in `folder` (renamed into place when whole)."""
        src = self.source
        n = src.x.shape[1]
        ce_mean = ("cross_entropy_mean", "forward")
        shapes = {k: (*src.batch, n) if full_shaped(*k) else src.batch for k in KEYS if k != ce_mean}
        sinks: dict[tuple[str, str], tuple] = {}
        for k, shape in shapes.items():
            if folder is None:
                sinks[k] = (np.empty((src.rows, n) if full_shaped(*k) else (src.rows,), dtype=LD),
                            np.empty((src.rows, n) if full_shaped(*k) else (src.rows,)))
            else:
                sinks[k] = tuple(_NpyWriter(folder / f"{self.tag}.{k[0]}.{k[1]}.{part}.npy", shape) for part in PARTS)
        ce = np.empty(src.rows, dtype=LD)
        ce_k = np.empty(src.rows)
        first = None
        for rows in src.block_rows():
            x = src.exact_input(rows)
            t, p = src.targets[rows], src.probs[rows]
            p_ld = p.astype(LD)
            fwd = _exact_forward(x, t, p_ld)
            s_grad = np.where(fwd["special"][..., None], LD(np.nan), fwd["softmax"])
            cot = {op: (g[rows] if g.ndim else g) for op, g in src.cotangents.items()}
            values = {(op, "forward"): np.asarray(fwd[op]) for op in OPS if op != "cross_entropy_mean"}
            for op in OPS:
                values[(op, "backward")] = exact_vjp(op, s_grad, t, p_ld, cot[op].astype(LD), src.grad_T, rows=src.rows)
            finite_x = np.where(fwd["special"][..., None], 0.0, np.asarray(x, dtype=np.float64))
            s = np.nan_to_num(np.asarray(fwd["softmax"], dtype=np.float64))
            terms = row_terms(finite_x, s, t, p, src.dtype, src.division)
            hi = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
            unit = units(finite_x, s, t, p, cot, hi, src.dtype, grad_scale=1.0 / src.grad_T, division=src.division,
                         keys=list(values), rows=src.rows, terms=terms)
            ce[rows], ce_k[rows] = fwd["cross_entropy"], terms["ce_k"]
            for k, sink in sinks.items():
                if folder is None:
                    sink[0][rows], sink[1][rows] = values[k], unit[k]
                else:
                    e = Expected(values[k], unit[k], src.dtype, 0.0)
                    for w, a in zip(sink, (e.hi, e.lo, e.unit), strict=True):
                        w.append(a)
            if first is None:
                first = (finite_x, s, t, p, cot)
        # cross_entropy_mean's forward is one value of the whole case: the mean over every row's CE (NaN rows
        # included, as IEEE has it) and, for its unit, of every row's distance term
        mean = np.asarray(np.mean(ce.reshape(src.batch)))
        finite_x, s, t, p, cot = first
        mean_unit = units(finite_x, s, t, p, cot, {ce_mean: np.asarray(mean, dtype=np.float64)}, src.dtype,
                          grad_scale=1.0 / src.grad_T, division=src.division, keys=[ce_mean], rows=src.rows,
                          ce_k_mean=np.mean(ce_k.reshape(src.batch)))[ce_mean]
        if folder is None:
            out = {k: Expected(v.reshape(shapes[k]), u.reshape(shapes[k]), src.dtype, ulp_bound(*k, n))
                   for k, (v, u) in sinks.items()}
            out[ce_mean] = Expected(mean, mean_unit, src.dtype, ulp_bound(*ce_mean, n))
            return out
        for w in (w for pair in sinks.values() for w in pair):
            w.close()
        e = Expected(mean, mean_unit, src.dtype, 0.0)
        for part, a in zip(PARTS, (e.hi, e.lo, e.unit), strict=True):
            _NpyWriter(folder / f"{self.tag}.{ce_mean[0]}.{ce_mean[1]}.{part}.npy", ()).append(a).close()
        (folder / f"{self.tag}.done").touch()
        return {}


class _NpyWriter:
    """A .npy file written block by block (the blocks pass through the page cache, not this process's
    memory), renamed into place when closed: whole or not at all, and another worker's copy is the same."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        from numpy.lib import format as npf

        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}")
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
        npf.write_array_header_1_0(self.file, {"descr": npf.dtype_to_descr(np.dtype(np.float64)),
                                               "fortran_order": False, "shape": tuple(shape)})

    def append(self, a: np.ndarray) -> _NpyWriter:
        np.ascontiguousarray(a, dtype=np.float64).tofile(self.file)
        return self

    def close(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)


class Reference:
    """Everything one (case, dtype) is graded with. `x` is the input every implementation receives:
    z / T correctly rounded to the dtype by the suite, once, the same bits for every framework;
    `expected` is exact on those bits. `temperature` receives `z` and divides by T itself, so it is
    graded against the exact z / T (`expected_temperature`; the same table when T = 1)."""

    def __init__(self, x: np.ndarray, z: np.ndarray, temperature: float, probs: np.ndarray,
                 cotangents: dict[str, np.ndarray], targets: np.ndarray, dtype: str, share: Path | None = None) -> None:
        self.x = x  # z / T correctly rounded to the dtype (float64 holding exact dtype values)
        self.z = z  # the logits rounded to the dtype (the same array as x when T = 1)
        self.temperature = temperature
        self.probs = probs  # probability targets rounded to the dtype
        self.cotangents = cotangents  # per op, rounded to the dtype; 1.0 for scalar outputs
        self.targets = targets
        self.dtype = dtype
        n = x.shape[-1]
        batch = tuple(x.shape[:-1])
        held = _Held(keep_all=x.size <= CHUNK_VALUES)
        flat_cot = {op: g.reshape(-1, n) if op in ROW_OPS else g.reshape(-1) if g.ndim else g
                    for op, g in cotangents.items()}

        def source(a: np.ndarray, T: float, grad_T: float, division: bool) -> _Input:
            return _Input(a.reshape(-1, n), T, targets.reshape(-1), probs.reshape(-1, n), flat_cot, dtype, grad_T,
                          division, batch)

        # (op, pass) -> Expected, of op(x), gradients wrt x; of op(z / T) exactly, gradients wrt z
        self.expected = ExpectedTable(source(x, 1.0, 1.0, False), "e", held, share)
        self.expected_temperature = self.expected if temperature == 1.0 else ExpectedTable(
            source(z, temperature, temperature, True), "t", held, share)
        self._held = held
        self._softmax_t1: np.ndarray | None = None

    def for_impl(self, impl: str) -> ExpectedTable:
        return self.expected_temperature if impl == "temperature" else self.expected

    @property
    def softmax_t1(self) -> np.ndarray:
        """softmax(z) at T = 1 as float64, for the temperature distance: kept for a small case, made when
        asked for a wide one (from the held softmax reference at T = 1, else block by block)."""
        if self._softmax_t1 is not None:
            return self._softmax_t1
        if self.temperature == 1.0:
            out = self.expected[("softmax", "forward")].hi
        else:
            z = self.z.reshape(-1, self.z.shape[-1])
            t, p = self.targets.reshape(-1), self.probs.reshape(-1, self.z.shape[-1])
            out = np.empty(z.shape)
            for rows in self.expected.source.block_rows():
                with np.errstate(all="ignore"):
                    out[rows] = _exact_forward(z[rows].astype(LD), t[rows], p[rows].astype(LD))["softmax"]
            out = out.reshape(self.z.shape)
        if self._held.keep_all:
            self._softmax_t1 = out
        return out

    def shared(self, path: Path) -> Reference:
        """This reference, writing its Expecteds into `path` (where `save` put its inputs) for other workers."""
        for table in (self.expected, self.expected_temperature):
            table.share = path
        return self

    def save(self, path: Path) -> None:
        """The inputs as a directory of plain .npy files (no pickles), so worker processes computing other
        frameworks of the same (case, dtype) load them (`load`) instead of rounding them again; the
        Expecteds they compute are saved beside them (ExpectedTable) as each is first computed."""
        arrays = {"x": self.x, "temperature": np.float64(self.temperature), "probs": self.probs,
                  "targets": self.targets, "dtype": np.str_(self.dtype)}
        if self.z is not self.x:
            arrays["z"] = self.z
        arrays.update({f"cot.{op}": g for op, g in self.cotangents.items()})
        path.mkdir()
        for name, a in arrays.items():
            np.save(path / f"{name}.npy", np.asarray(a), allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> Reference:
        """The inputs `save` wrote, as ordinary writable arrays (torch warns on, and may share, a
        read-only buffer); the Expecteds other workers saved there are loaded when asked for."""
        def get(name: str) -> np.ndarray:
            return np.load(path / f"{name}.npy", allow_pickle=False)

        x = get("x")
        z = get("z") if (path / "z.npy").exists() else x
        return cls(x=x, z=z, temperature=float(get("temperature")), probs=get("probs"),
                   cotangents={op: get(f"cot.{op}") for op in OPS}, targets=get("targets"), dtype=str(get("dtype")),
                   share=path)


def output_shape(op: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of op's output for logits of `shape` (classes last)."""
    return shape if op in ROW_OPS else () if op == "cross_entropy_mean" else shape[:-1]


def cotangent(case: Case, op: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Fixed, case-seeded cotangent for the VJP of `op`; exactly 1 for scalar outputs."""
    if shape == ():
        return np.array(1.0)
    return round_to(case.rng(f"cotangent:{op}").standard_normal(shape), dtype)


def _softmax_parts(x: np.ndarray) -> dict[str, np.ndarray]:
    """Shifted log1p algorithm in long double on rows without NaN/+inf/all -inf."""
    a = np.max(x, axis=-1, keepdims=True)
    d = x - a
    e = np.exp(d)
    rest = e.copy()
    np.put_along_axis(rest, np.argmax(x, axis=-1)[..., None], 0, axis=-1)
    l1p = np.log1p(np.sum(rest, axis=-1, keepdims=True))
    return {"softmax": e / np.exp(l1p), "log_softmax": d - l1p, "lse": (a + l1p)[..., 0]}


def _special_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nan_row = np.isnan(x).any(axis=-1)
    pinf_row = (x == np.inf).any(axis=-1)
    masked_row = (x == -np.inf).all(axis=-1)
    return nan_row, pinf_row & ~nan_row, masked_row & ~nan_row


def _exact_forward(x: np.ndarray, targets: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    nan_row, pinf_row, masked_row = _special_rows(x)
    special = nan_row | pinf_row | masked_row
    parts = _softmax_parts(np.where(special[..., None], LD(0), x))
    sm, lsm, lse = parts["softmax"], parts["log_softmax"], np.array(parts["lse"])
    with np.errstate(invalid="ignore"):
        ce = np.array(-np.take_along_axis(lsm, targets[..., None], axis=-1)[..., 0])
        soft = np.array(-np.sum(np.where(probs != 0, probs * lsm, LD(0)), axis=-1))
    sm[special] = np.nan
    lsm[special] = np.nan
    lse[nan_row] = np.nan
    lse[pinf_row] = np.inf
    lse[masked_row] = -np.inf
    ce[special] = np.nan
    soft[special] = np.nan
    return {"softmax": sm, "log_softmax": lsm, "logsumexp": lse, "cross_entropy": ce,
            "cross_entropy_mean": np.mean(ce), "soft_cross_entropy": soft, "special": special}


def exact_vjp(op: str, s: np.ndarray, targets: np.ndarray, probs: np.ndarray, g: np.ndarray,
              temperature: float, rows: int | None = None) -> np.ndarray:
    """analytic_vjp without its cancellation: where the formula subtracts nearly equal terms (at the
    row's dominant class k, or the CE target t) the entry is rewritten through rest_i = sum_{j!=i} s_j,
    which is a sum of small positive terms and keeps full relative accuracy:
    softmax: s_k * sum_{j!=k} s_j (g_k - g_j); log_softmax: rest_k * sum(g) - sum_{j!=k} g_j;
    CE: -rest_t; soft CE: sum_{j!=k} p_j - sum(p) * rest_k.
    The rewrite is used where s at that index is >= 1/2 (dominant). Chance near-equalities elsewhere
    (g_i ~ sum_j g_j s_j) keep long double's 2^-64 times the
    cancellation: docs/grading.md states that bound for backward references. `rows`: the case's rows, of which
    `s` may be a block (cross_entropy_mean divides by all of them; default: s's own)."""
    rows = max(int(np.prod(s.shape[:-1])), 1) if rows is None else max(rows, 1)
    if op == "cross_entropy_mean":  # analytic_vjp's, with the case's row count
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            onehot = np.zeros_like(s)
            np.put_along_axis(onehot, targets[..., None], 1, axis=-1)
            out = g * (s - onehot) / rows / s.dtype.type(temperature)
    else:
        out = analytic_vjp(op, s, targets, probs, g, temperature)
    if op == "logsumexp" or out.ndim == 0:
        return out
    T = LD(temperature)

    def at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, idx[..., None], axis=-1)

    def rest(a: np.ndarray, idx: np.ndarray) -> np.ndarray:  # sum over j != idx
        b = a.copy()
        np.put_along_axis(b, idx[..., None], 0, axis=-1)
        return np.sum(b, axis=-1, keepdims=True)

    with np.errstate(invalid="ignore", over="ignore"):
        if op in ("cross_entropy", "cross_entropy_mean"):
            idx = targets
            gg = g[..., None] if op == "cross_entropy" else g / rows
            val = -gg * rest(s, idx)
        else:
            idx = np.argmax(np.where(np.isnan(s), -1, s), axis=-1)
            if op == "softmax":
                val = at(s, idx) * np.sum(np.where(s > 0, s * (at(g, idx) - g), 0), axis=-1, keepdims=True)
            elif op == "log_softmax":
                val = rest(s, idx) * np.sum(g, axis=-1, keepdims=True) - rest(g, idx)
            else:  # soft_cross_entropy
                val = g[..., None] * (rest(probs, idx) - np.sum(probs, axis=-1, keepdims=True) * rest(s, idx))
        # special rows keep their NaN; where s at idx is below 1/2 the plain formula cancels at most 2x,
        # and the rewrite (a difference of sums near 1) would cancel more
        keep = np.isfinite(at(out, idx)) & (at(s, idx) >= 0.5)
        np.put_along_axis(out, idx[..., None], np.where(keep, val / T, at(out, idx)), axis=-1)
    return out


def compute_reference(case: Case, dtype: str) -> Reference:
    """The inputs of one (case, dtype), rounded once; the Expecteds are computed when first asked for
    (ExpectedTable). Arrays that rounding leaves unchanged (float64 logits, one-hot probs) are the case's
    own, not copies."""
    z = case.logits if dtype == "float64" else round_to(case.logits, dtype)  # float64 rounds to itself
    T = float(case.temperature)
    x = divide_rounded(z, T, dtype) if T != 1.0 else z
    probs = round_to(case.probs, dtype)
    if np.array_equal(probs, case.probs):
        probs = case.probs
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        cot = {op: cotangent(case, op, output_shape(op, x.shape), dtype) for op in OPS}
    return Reference(x=x, z=z, temperature=T, probs=probs, cotangents=cot, targets=case.targets, dtype=dtype)
