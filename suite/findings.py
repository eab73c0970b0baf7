"""Findings: what is broken where, derived from accuracy rows (the report's first section, the end of `run`).

A *finding* is a defect of a framework's own implementation (`fused`: torch.softmax, tf.nn.softmax, ...;
and any plug-in): a row that is not `ok` where the exact answer is finite, or a special value other than
the exact ±inf. The suite's hand-written formulas (`naive`, `shifted`, ...) failing is the lesson of the
catalog, not a framework's defect, so their rows never make findings. Where the exact answer is NaN (an
undefined point: a +inf or NaN logit, a fully masked row) another value is a *convention* the framework
chose, listed apart. docs/findings.md describes the rules and how to read an entry.

Rows are grouped by a known mechanism (MECHANISMS, matched by pattern) and framework; rows no mechanism
explains by framework x op x pass x verdict x dtype class, so each entry is one defect with its cases.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from suite.ops import IMPLS, ROW_OPS

OWN_IMPLS = ("fused",)  # the framework's own op; every impl not in suite.ops.IMPLS is a plug-in
DEFECT_VERDICTS = ("nonfinite", "inaccurate", "wrong_special", "error", "mutates_input", "changes_settings")
HALF = ("float16", "bfloat16")
INLINE_MAX = 48  # input values written out in a reproducer; larger inputs must have a short generator
SUMMARY_LINES = 10


@dataclass(frozen=True)
class Mechanism:
    """A known cause, matched on a row's columns (None: any value) and an optional row predicate."""

    key: str
    title: str  # "{fw}" becomes the framework, "{api}" the framework calls involved
    text: str
    verdicts: tuple[str, ...]
    backends: tuple[str, ...] | None = None
    ops: tuple[str, ...] | None = None
    passes: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] | None = None
    devices: tuple[str, ...] | None = None
    when: str | None = None  # name of a predicate below, on the row


MECHANISMS: tuple[Mechanism, ...] = (
    Mechanism("zero-times-inf", "{api}: NaN from 0 · (−inf) on zero-probability classes",
              "the op sums p · log_softmax with p = 0 where log_softmax is −inf (a masked class, or one "
              "below the dtype's range): 0 · −inf = NaN, where the limit and the convention are 0",
              ("nonfinite",), ops=("soft_cross_entropy",), passes=("forward",)),
    Mechanism("half-mean-overflow", "{api}: the float16 mean overflows",
              "the mean sums the per-row losses in float16; the sum overflows (inf) although the mean fits",
              ("nonfinite",), ops=("cross_entropy_mean",), passes=("forward",), dtypes=("float16",)),
    Mechanism("lse-backward-rounded", "{api} backward loses accuracy at large logits",
              "the gradient is computed as exp(x − lse) from the rounded lse (division-free softmax): an "
              "absolute error u·|lse| in the exponent, a relative error u·|lse| in every gradient",
              ("inaccurate",), backends=("torch",), ops=("logsumexp",), passes=("backward",)),
    Mechanism("bf16-sum-in-bf16", "{fw}: bfloat16 sums accumulate in bfloat16 ({api})",
              "np.sum over ml_dtypes.bfloat16 accumulates 8-bit partial sums, so on thousands of classes the "
              "row sum is off by percents (4,096 equal logits: each probability 1/256); torch, TensorFlow "
              "and XLA accumulate in float32",
              ("inaccurate",), backends=("numpy",), dtypes=("bfloat16",), when="many_classes"),
    Mechanism("flush-to-zero", "{fw} CPU kernels flush subnormals to zero ({api})",
              "TensorFlow's and XLA's CPU kernels run with denormals flushed to zero: a subnormal exp(x − m) "
              "becomes 0, and so does a normal result computed from it",
              ("inaccurate",), backends=("tensorflow", "jax"), devices=("cpu",), when="subnormal_exp"),
    Mechanism("wide-row-sum", "{fw} CPU reductions on very wide rows exceed the error bound ({api})",
              "the vectorized CPU reduction accumulates sequentially over chunks of a very wide row "
              "(mechanism not proven here; see docs/modes.md, the compiled CPU matrix)",
              ("inaccurate",), backends=("torch", "tensorflow"), devices=("cpu",), when="wide_row"),
    Mechanism("float32-accuracy", "{api}: float64 results with float32 accuracy",
              "relative errors of 2^-30 to 2^-17, the size of float32 rounding, in float64 results: the "
              "computation runs in float32 somewhere (a keras Loss computes in its dtype, floatx() = float32, "
              "unless dtype= is given; Liger's kernels accumulate in float32)",
              ("inaccurate",), dtypes=("float64",), when="float32_level"),
)
UNKNOWN = "not known: no entry of suite.findings.MECHANISMS matches; the reproducer shows it"


# --- which rows --------------------------------------------------------------------------------------

def own(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the frameworks' own implementations and plug-ins (not the suite's hand-written formulas)."""
    return df[df.impl.isin(OWN_IMPLS) | ~df.impl.isin(IMPLS)]


def _pairs(message: str) -> list[tuple[str, str]]:
    """[(got, exact)] from metrics' 'differ from the exact special value' message."""
    return re.findall(r"(NaN|[+-]inf|finite) for (NaN|[+-]inf)", str(message))


def kind(verdict: str, message: str) -> str | None:
    """'defect', 'convention' (another value where the exact answer is NaN), or None (ok, unsupported)."""
    if verdict not in DEFECT_VERDICTS:
        return None
    if verdict == "wrong_special":
        pairs = _pairs(message)
        if pairs and all(want == "NaN" for _, want in pairs):
            return "convention"
    return "defect"


@functools.cache
def _case(name: str):
    from cases import CASES

    return {c.name: c for c in CASES}.get(name)


@functools.cache
def _x(case: str, dtype: str) -> np.ndarray | None:
    """The input every implementation received (z / T rounded once to the dtype), float64."""
    from suite.dtypes import divide_rounded, round_to

    c = _case(case)
    if c is None:
        return None
    z = round_to(c.logits, dtype)
    return divide_rounded(z, c.temperature, dtype) if c.temperature != 1.0 else z


@functools.cache
def subnormal_exp(case: str, dtype: str) -> bool:
    """Whether some exp(x_i − max) of the case is subnormal in the dtype, or within one significand width
    above (2^(p+1) times the smallest normal: a product or quotient of it can be): what flush-to-zero changes."""
    from suite.dtypes import finfo

    x = _x(case, dtype)
    if x is None:
        return False
    with np.errstate(all="ignore"):
        d = x - np.max(np.where(np.isfinite(x), x, -np.inf), axis=-1, keepdims=True)
        e = np.exp(d[np.isfinite(d)])
    fi = finfo(dtype)
    near = float(fi.tiny) * 2.0 ** (int(fi.nmant) + 1)
    return bool(np.any((e > 0) & (e < near) & (e >= float(fi.smallest_subnormal) / 2)))


PREDICATES = {"subnormal_exp": lambda r: subnormal_exp(r["case"], r["dtype"]),
              "wide_row": lambda r: float(r.get("n_classes") or 0) >= 16384,
              "many_classes": lambda r: float(r.get("n_classes") or 0) >= 1024,
              "float32_level": lambda r: 2.0 ** -30 <= float(r.get("max_rel_err") or 0) <= 2.0 ** -17}


def mechanism(row: pd.Series) -> Mechanism | None:
    """The first MECHANISMS entry whose pattern the row matches."""
    for m in MECHANISMS:
        if row["verdict"] not in m.verdicts:
            continue
        if any(vals is not None and str(row.get(col)) not in vals for col, vals in
               (("backend", m.backends), ("op", m.ops), ("pass", m.passes), ("dtype", m.dtypes),
                ("device", m.devices))):
            continue
        if m.when and not PREDICATES[m.when](row):
            continue
        return m
    return None


# --- grouping -----------------------------------------------------------------------------------------

@dataclass
class Finding:
    kind: str  # defect | convention
    title: str
    rows: pd.DataFrame
    mechanism: str
    reproducer: str | None = None
    no_reproducer: str = ""
    facts: dict[str, str] = field(default_factory=dict)


def _api(backend: str, op: str, impl: str) -> str:
    if impl not in IMPLS:
        return f"plug-in {impl}"
    try:
        from suite.backend_api import discover

        mod = importlib.import_module(discover()[backend].module)
        return mod.Backend.fused_api.get(op, f"{backend} {op}")
    except (KeyError, ImportError, AttributeError):
        return f"{backend} {op}"


def _join(values, limit: int = 4) -> str:
    v = [str(x) for x in dict.fromkeys(values)]
    return ", ".join(v[:limit]) + (f" (+{len(v) - limit} more)" if len(v) > limit else "")


def _dclass(dtype: str) -> str:
    return "16-bit" if dtype in HALF else "32/64-bit"


def _group_key(r: pd.Series) -> tuple:
    k = kind(r["verdict"], r.get("message", ""))
    m = mechanism(r) if k == "defect" else None
    if m is not None:
        return (k, r["backend"], r["impl"], m.key)
    if k == "convention":
        got = _join(sorted({g for g, _ in _pairs(r.get("message", ""))}))
        return (k, r["backend"], r["impl"], r["op"], r["pass"], got)
    if r["verdict"] in ("error", "mutates_input", "changes_settings"):  # one defect per distinct exception
        return (k, r["backend"], r["impl"], r["verdict"], _first_line(r.get("message", "")))
    return (k, r["backend"], r["impl"], r["pass"], r["verdict"], _dclass(r["dtype"]))  # the ops together


VERDICT_PHRASE = {"nonfinite": "NaN/inf where the answer is finite", "inaccurate": "past the error bound",
                  "wrong_special": "wrong special value", "error": "raises",
                  "mutates_input": "writes into its input", "changes_settings": "changes process settings"}


def _common_tags(rows: pd.DataFrame) -> str:
    """The catalog tags every case of the group has (the row's `tags`, else the catalog's)."""
    cases = rows.drop_duplicates("case")
    tags = cases.tags if "tags" in cases else [",".join(c.tags) if (c := _case(n)) else "" for n in cases.case]
    sets = [set(str(t).split(",")) - {"", "nan", "None"} for t in tags]
    common = set.intersection(*sets) if sets else set()
    return ", ".join(sorted(common))


def _apis(backend: str, ops: list[str], impl: str, framework: bool = True) -> str:
    """What the entry's title names: the framework calls (a plug-in by name), or how many ops (after the
    framework's name unless the title has it already: `framework` False)."""
    if impl not in IMPLS:
        return f"plug-in {impl}" + (f" [{_join(ops, 3)}]" if len(ops) <= 3 else f" [{len(ops)} ops]")
    return _api(backend, ops[0], impl) if len(ops) == 1 else f"{backend}: " * framework + f"{len(ops)} ops"


def _title(key: tuple, rows: pd.DataFrame) -> str:
    backend, impl = key[1], key[2]
    ops = sorted(set(rows.op))
    m = next((m for m in MECHANISMS if m.key == key[-1]), None) if len(key) == 4 else None
    if m is not None:
        return m.title.format(fw=backend, api=_apis(backend, ops, impl, framework=False))
    apis = _apis(backend, ops, impl)
    dtypes = "/".join(d for d in ("float16", "bfloat16", "float32", "float64") if d in set(rows.dtype))
    if key[0] == "convention":
        return f"{apis} {key[4]}: {key[5]} where the convention says NaN"
    if len(key) == 5:
        return f"{apis}: {VERDICT_PHRASE.get(key[3], key[3])}" + (f" ({key[4]})" if key[3] == "error" else "")
    tags = _common_tags(rows)
    return f"{apis} {key[3]}: {VERDICT_PHRASE.get(key[4], key[4])} in {dtypes}" + (f" ({tags} cases)" if tags else "")


def _worst(rows: pd.DataFrame) -> str:
    inacc = rows[rows.verdict == "inaccurate"]
    if len(inacc):
        r = inacc.loc[inacc.ulp_err_scaled.astype(float).idxmax()]
        return f"{float(r.ulp_err_scaled):.3g} graded ULPs (bound {float(r.ulp_bound):g}), {r['case']} {r['dtype']}"
    nf = rows[rows.verdict.isin(["nonfinite", "wrong_special"])]
    if len(nf):
        col = "n_nonfinite" if (nf.verdict == "nonfinite").any() else "n_wrong_special"
        nf = nf[nf.verdict == ("nonfinite" if col == "n_nonfinite" else "wrong_special")]
        r = nf.loc[nf[col].astype(float).fillna(0).idxmax()] if col in nf else nf.iloc[0]
        return f"{r['message']} ({r['case']} {r['dtype']})"
    r = rows.iloc[0]
    return f"{r['message']} ({r['case']} {r['dtype']})"


def derive(df: pd.DataFrame, reproducers: bool = True) -> list[Finding]:
    """Findings of accuracy rows (any selection: a whole store or one run): defects first, the frameworks' own
    ops before plug-ins, most cases first."""
    if df.empty or "verdict" not in df:
        return []
    rows = own(df)
    rows = rows[rows.verdict.isin(DEFECT_VERDICTS)]
    if rows.empty:
        return []
    rows = rows.assign(**{c: rows[c].astype(str) for c in ("backend", "device", "dtype", "op", "pass", "impl")})
    mode = rows["mode"].astype(str).replace({"nan": "", "None": "", "<NA>": ""}) if "mode" in rows else ""
    rows = rows.assign(mode=mode)
    keys = rows.apply(_group_key, axis=1)
    out = []
    for key, idx in keys.groupby(keys).groups.items():
        g = rows.loc[idx]
        m = next((m for m in MECHANISMS if m.key == key[-1]), None) if len(key) == 4 else None
        f = Finding(key[0], _title(key, g), g, m.text if m else (
            "a convention: where the math is undefined the suite's convention (Case.convention) is the IEEE "
            "answer, NaN" if key[0] == "convention" else UNKNOWN))
        f.facts = facts(g)
        if reproducers and key[0] == "defect":
            f.reproducer, f.no_reproducer = reproducer(g)
        out.append(f)
    out.sort(key=lambda f: (f.kind != "defect", f.rows.impl.iloc[0] not in IMPLS, -f.rows.case.nunique(), f.title))
    return out


def facts(g: pd.DataFrame) -> dict[str, str]:
    vers = _join(sorted({f"{b} {v}" for b, v in zip(g.backend, g.get("backend_version", [""] * len(g)),
                                                       strict=True)}))
    modes = _join(sorted({f"{d} {m}".strip() for d, m in zip(g.device, g["mode"].astype(str), strict=True)}))
    ops = _join(f"{o} {p}" for o, p in sorted({(o, p) for o, p in zip(g.op, g["pass"], strict=True)}))
    dtypes = "/".join(d for d in ("float16", "bfloat16", "float32", "float64") if d in set(g.dtype))
    return {"framework": vers, "where": modes, "ops": ops, "dtypes": dtypes,
            "cases": f"{g.case.nunique()} ({len(g)} rows): {_join(sorted(set(g.case)), 3)}",
            "worst": _worst(g)}


# --- reproducers --------------------------------------------------------------------------------------

def _lit(a: np.ndarray) -> str:
    return repr(np.asarray(a, dtype=np.float64).tolist()).replace("inf", "INF").replace("nan", "NAN")


@functools.cache
def _normal_seed(case: str) -> tuple[int, float] | None:
    """(seed, scale) when the case's logits are numpy's default_rng(seed).normal(0, scale, shape), up to a
    few entries (how the catalog's random cases are made)."""
    c = _case(case)
    a = c.logits.ravel()
    for seed in range(128):
        z = np.random.default_rng(seed).standard_normal(a.size)
        with np.errstate(all="ignore"):
            ratio = a / z
        scale = float(np.median(ratio))
        scale = float(f"{scale:.6g}")
        if np.count_nonzero(scale * z != a) <= 4:
            return seed, scale
    return None


def _input_lines(case: str, dtype: str) -> list[str] | None:
    """Lines that make `x64`: the case's input before the framework's cast (None: no short form)."""
    c = _case(case)
    if c is None:
        return None
    x = _x(case, dtype)
    if x.size <= INLINE_MAX:
        return ["INF, NAN = float('inf'), float('nan')" if not np.isfinite(x).all() else "",
                f"x64 = np.array({_lit(x)})"]
    a, T = c.logits, c.temperature
    div = f" / {T!r}" if T != 1.0 else ""
    if np.all(a == a.flat[0]):
        return [f"x64 = np.full({a.shape}, {float(a.flat[0])!r}){div}"]
    lin = np.linspace(a.flat[0], a.flat[-1], a.size)
    if np.array_equal(lin, a.ravel()):
        return [f"x64 = np.linspace({float(a.flat[0])!r}, {float(a.flat[-1])!r}, {a.size}).reshape({a.shape}){div}"]
    found = _normal_seed(case)
    if found is None:
        return None
    seed, scale = found
    lines = [f"x64 = np.random.default_rng({seed}).normal(0.0, {scale!r}, {a.shape})"]
    z = scale * np.random.default_rng(seed).standard_normal(a.shape)
    for i in zip(*np.nonzero(z != a), strict=True):
        lines.append(f"x64[{', '.join(map(str, i))}] = {float(a[i])!r}")
    if T != 1.0:
        lines.append(f"x64 = x64{div}  # the suite rounds z / T once; a cast of this may differ in the last bit")
    return lines


def _side_lines(case: str, dtype: str, op: str, pass_: str) -> list[str] | None:
    """targets `t64`, probabilities `p64`, cotangent `g64` as the row had them."""
    c = _case(case)
    lines = []
    if op in ("cross_entropy", "cross_entropy_mean", "soft_cross_entropy"):
        lines.append(f"t64 = np.array({c.targets.tolist()!r})")
    if op == "soft_cross_entropy":
        onehot = np.zeros(c.logits.shape)
        np.put_along_axis(onehot, c.targets[..., None], 1.0, axis=-1)
        if np.array_equal(onehot, c.probs):
            lines += ["p64 = np.zeros(x64.shape)", "np.put_along_axis(p64, t64[..., None], 1.0, axis=-1)"]
        elif c.probs.size <= INLINE_MAX:
            from suite.dtypes import round_to

            lines.append(f"p64 = np.array({_lit(round_to(c.probs, dtype))})")
        else:
            return None
    if pass_ == "backward":
        shape = c.logits.shape if op in ROW_OPS else () if op == "cross_entropy_mean" else c.logits.shape[:-1]
        if shape == ():
            lines.append("g64 = np.array(1.0)")
        else:
            import zlib

            lines.append(f"g64 = np.random.default_rng([{int(c.seed)}, {zlib.crc32(f'cotangent:{op}'.encode())}])"
                         f".standard_normal({shape})")
    return lines


# The framework call of `fused` per op; x, t (targets), p (probabilities) are the framework's arrays.
CALLS = {
    "torch": {"softmax": "torch.softmax(x, dim=-1)", "log_softmax": "torch.log_softmax(x, dim=-1)",
              "logsumexp": "torch.logsumexp(x, dim=-1)",
              "cross_entropy": "F.cross_entropy(x, t, reduction='none')",
              "cross_entropy_mean": "F.cross_entropy(x, t, reduction='mean')",
              "soft_cross_entropy": "F.cross_entropy(x, p, reduction='none')"},
    "tensorflow": {"softmax": "tf.nn.softmax(x, axis=-1)", "log_softmax": "tf.nn.log_softmax(x, axis=-1)",
                   "logsumexp": "tf.reduce_logsumexp(x, axis=-1)",
                   "cross_entropy": "tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=x)",
                   "cross_entropy_mean":
                       "tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=x))",
                   "soft_cross_entropy": "tf.nn.softmax_cross_entropy_with_logits(labels=p, logits=x)"},
    "jax": {"softmax": "jax.nn.softmax(x, axis=-1)", "log_softmax": "jax.nn.log_softmax(x, axis=-1)",
            "logsumexp": "jax.scipy.special.logsumexp(x, axis=-1)",
            "cross_entropy": "-jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), t[..., None], axis=-1)[..., 0]",
            "cross_entropy_mean":
                "jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), t[..., None], axis=-1))",
            "soft_cross_entropy": "-jnp.sum(p * jax.nn.log_softmax(x, axis=-1), axis=-1)"},
    "numpy": {"softmax": "sp.softmax(x, axis=-1)", "log_softmax": "sp.log_softmax(x, axis=-1)",
              "logsumexp": "sp.logsumexp(x, axis=-1)",
              "cross_entropy": "-np.take_along_axis(sp.log_softmax(x, axis=-1), t[..., None], axis=-1)[..., 0]",
              "cross_entropy_mean":
                  "np.mean(-np.take_along_axis(sp.log_softmax(x, axis=-1), t[..., None], axis=-1))",
              "soft_cross_entropy": "-np.sum(p * sp.log_softmax(x, axis=-1), axis=-1)"},
}
# numpy has no autodiff: the suite's backward is seed 003's analytic VJP on scipy's softmax s
NUMPY_VJP = {"softmax": "s * (g - np.sum(g * s, axis=-1, keepdims=True))",
             "log_softmax": "g - s * np.sum(g, axis=-1, keepdims=True)", "logsumexp": "g[..., None] * s",
             "cross_entropy": "g[..., None] * (s - (np.arange(s.shape[-1]) == t[..., None]).astype(s.dtype))",
             "cross_entropy_mean":
                 "g * (s - (np.arange(s.shape[-1]) == t[..., None]).astype(s.dtype)) / max(s.size // s.shape[-1], 1)",
             "soft_cross_entropy": "g[..., None] * (s * np.sum(p, axis=-1, keepdims=True) - p)"}


def _framework_lines(backend: str, op: str, pass_: str, dtype: str, mode: str, device: str,
                     has: set[str]) -> list[str] | None:
    call = CALLS.get(backend, {}).get(op)
    if call is None:
        return None
    fwd = pass_ == "forward"
    if backend == "torch":
        dev = ", device='cuda'" if device == "gpu" else ""
        lines = ["import torch", "import torch.nn.functional as F", ""]
        lines += [f"{v} = torch.tensor({v}64{dev}).to(torch.{dtype})" for v in ("x", "p", "g") if v in has]
        lines += [f"t = torch.tensor(t64{dev})"] if "t" in has else []
        lines.append(f"f = lambda x: {call}")
        if mode == "compiled":
            lines.append("f = torch.compile(f, fullgraph=True, dynamic=False)")
        if fwd:
            lines.append("got = f(x)")
        else:
            lines += ["x.requires_grad_(True)", "(got,) = torch.autograd.grad(f(x), x, grad_outputs=g)"]
        lines.append("f64 = lambda a: a.detach().double().cpu().numpy()")
        return lines
    if backend == "tensorflow":
        lines = ["import tensorflow as tf", ""]
        lines += [f"{v} = tf.cast(tf.constant({v}64), tf.{dtype})" for v in ("x", "p", "g") if v in has]
        lines += ["t = tf.constant(t64)"] if "t" in has else []
        if fwd:
            lines.append(f"f = lambda x: {call}")
        else:
            lines += ["def f(x, g):", "    with tf.GradientTape() as tape:", "        tape.watch(x)",
                      f"        y = {call}", "    return tape.gradient(y, x, output_gradients=g)"]
        if mode == "compiled":
            lines.append("f = tf.function(f, jit_compile=True)")
        lines.append("got = f(x)" if fwd else "got = f(x, g)")
        lines.append("f64 = lambda a: tf.cast(a, tf.float64).numpy()")
        return lines
    if backend == "jax":
        lines = ["import jax", "import jax.numpy as jnp", "", "jax.config.update('jax_enable_x64', True)"]
        lines += [f"{v} = jnp.asarray({v}64, dtype=jnp.{dtype})" for v in ("x", "p", "g") if v in has]
        lines += ["t = jnp.asarray(t64)"] if "t" in has else []
        lines.append(f"f = lambda x: {call}")
        lines.append("got = jax.jit(f)(x)" if fwd else
                     "got = jax.jit(lambda x, g: jax.vjp(f, x)[1](g.astype(f(x).dtype))[0])(x, g)")
        lines.append("f64 = lambda a: np.asarray(a, np.float64)")
        return lines
    if backend == "numpy":
        lines = ["import scipy.special as sp", ""]
        if dtype == "bfloat16":
            lines.insert(0, "import ml_dtypes")
        dt = "ml_dtypes.bfloat16" if dtype == "bfloat16" else f"np.{dtype}"
        lines += [f"{v} = {v}64.astype({dt})" for v in ("x", "p", "g") if v in has]
        lines += ["t = t64"] if "t" in has else []
        if fwd:
            lines.append(f"got = {call}")
        else:
            lines += ["s = sp.softmax(x, axis=-1)", f"got = {NUMPY_VJP[op]}  # the suite's analytic VJP"]
        lines.append("f64 = lambda a: np.asarray(a).astype(np.float64)")
        return lines
    return None


# Exact values with mpmath from the inputs the framework actually saw (xs, t64, p64, g64 as float64).
EXACT_FORWARD = {
    "softmax": "[mp.exp(v - l) for r, l in zip(R, L) for v in r]",
    "log_softmax": "[v - l for r, l in zip(R, L) for v in r]",
    "logsumexp": "L",
    "cross_entropy": "[l - r[k] for r, l, k in zip(R, L, T)]",
    "cross_entropy_mean": "[mp.fsum(l - r[k] for r, l, k in zip(R, L, T)) / len(R)]",
    "soft_cross_entropy": "[-mp.fsum(q * (v - l) for q, v in zip(pr, r) if q) for r, l, pr in zip(R, L, P)]",
}
EXACT_BACKWARD = {
    "softmax": "[s * (gi - mp.fsum(a * b for a, b in zip(gr, sr))) for sr, gr in zip(S, G) for s, gi in zip(sr, gr)]",
    "log_softmax": "[gi - s * mp.fsum(gr) for sr, gr in zip(S, G) for s, gi in zip(sr, gr)]",
    "logsumexp": "[gr * s for sr, gr in zip(S, G) for s in sr]",
    "cross_entropy": "[gr * (s - (i == k)) for sr, gr, k in zip(S, G, T) for i, s in enumerate(sr)]",
    "cross_entropy_mean": "[(s - (i == k)) / len(R) for sr, k in zip(S, T) for i, s in enumerate(sr)]",
    "soft_cross_entropy": "[gr * (s * mp.fsum(pr) - q) for sr, gr, pr in zip(S, G, P) for s, q in zip(sr, pr)]",
}
SHOW = '''
def show(got, exact):  # the framework's value next to the exact one, largest relative difference first
    got, ex = np.ravel(got), np.array([float(e) for e in exact])
    with np.errstate(all="ignore"):
        err = np.abs(got - ex) / np.maximum(np.abs(ex), TINY)
    err[(got == ex) | (np.isnan(got) & np.isnan(ex))] = 0
    err[np.isnan(err)] = np.inf
    for i in np.argsort(-err, kind="stable")[:3]:
        print(f"[{i}] {NAME}: {float(got[i])!r:<24} exact: {float(ex[i])!r}")
'''


def _tiny(dtype: str) -> float:
    from suite.dtypes import finfo

    return float(finfo(dtype).tiny)


def _exact_lines(op: str, pass_: str, has: set[str]) -> list[str]:
    lines = ["out, xs = f64(got), f64(x)  # the exact values below are of the inputs the framework saw",
             "mp.mp.dps = 40", "R = xs.reshape(-1, xs.shape[-1]).tolist()",
             "L = [mp.log(mp.fsum(mp.exp(mp.mpf(v)) for v in r)) for r in R]"]
    if "t" in has:
        lines.append("T = t64.reshape(-1).tolist()")
    if "p" in has:
        lines.append("P = f64(p).reshape(-1, xs.shape[-1]).tolist()")
    if pass_ == "backward":
        lines.append("S = [[mp.exp(v - l) for v in r] for r, l in zip(R, L)]")
        lines.append("G = f64(g).reshape(len(R), -1).tolist()" if op in ROW_OPS else "G = f64(g).reshape(-1).tolist()")
        lines.append(f"exact = {EXACT_BACKWARD[op]}")
    else:
        lines.append(f"exact = {EXACT_FORWARD[op]}")
    return lines


def _snippet(row: pd.Series) -> str | None:
    backend, op, pass_, dtype, case = row["backend"], row["op"], row["pass"], row["dtype"], row["case"]
    inp = _input_lines(case, dtype)
    side = _side_lines(case, dtype, op, pass_) if inp is not None else None
    if inp is None or side is None:
        return None
    if _case(case).logits.ndim > 2:  # the frameworks' CE wants classes on axis 1: flatten the batch
        inp = [*inp, "x64 = x64.reshape(-1, x64.shape[-1])"]
        side = [s.replace("t64 = np.array(", "t64 = np.ravel(np.array(") + (")" if s.startswith("t64 =") else "")
                for s in side]
    has = {"x"} | {v for v in ("t", "p", "g") if any(s.startswith(f"{v}64 =") for s in side)}
    fw = _framework_lines(backend, op, pass_, dtype, str(row.get("mode", "")), row["device"], has)
    if fw is None:
        return None
    version = row.get("backend_version", "")
    head = [f"# {backend} {version} · {row['device']} {row.get('mode', '')} · {dtype} · {op} {pass_}",
            f"# catalog case {case}: {_case(case).description[:90]}",
            f"# the suite graded it {row['verdict']}: {str(row.get('message', ''))[:80]}",
            "import mpmath as mp", "import numpy as np"]
    names = f"NAME, TINY = {backend!r}, {_tiny(dtype)!r}  # TINY: the dtype's smallest normal number"
    body = [*[s for s in inp if s], *side, *fw, names, *SHOW.strip("\n").split("\n"),
            "", *_exact_lines(op, pass_, has), "show(out, exact)"]
    return "\n".join(head[:3] + sorted(set(head[3:])) + [ln for ln in fw if ln.startswith("import")] + [""]
                     + [ln for ln in body if not ln.startswith("import")])


def reproducer(g: pd.DataFrame) -> tuple[str | None, str]:
    """(snippet, '') for the group's smallest failing case with a short input, else (None, why not)."""
    size = g.apply(lambda r: _case(r["case"]).logits.size if _case(r["case"]) is not None else 1 << 60, axis=1)
    native = g.apply(lambda r: str(r.get("mode", "")) in ("", "eager") or r["backend"] == "jax", axis=1)
    order = g.assign(_size=size, _native=~native).sort_values(["_native", "_size", "dtype", "op"])
    for _, r in order.head(12).iterrows():
        if r["impl"] not in IMPLS:
            return None, f"plug-in {r['impl']}: call it on catalog case {r['case']} ({r['dtype']})"
        s = _snippet(r)
        if s is not None:
            return s, ""
    r = order.iloc[0]
    return None, f"no short form of the input of catalog case {r['case']} ({int(r['_size'])} values)"


# --- rendering ----------------------------------------------------------------------------------------

def _wrap(text: str, width: int = 120) -> str:
    """Markdown lines short enough for a 1,400 px window (a renderer joins them again)."""
    import textwrap

    indent = " " * (text.index(" ") + 1) if re.match(r"(- |\d+\. )", text) else ""
    return textwrap.fill(text, width, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def _cases(rows: pd.DataFrame) -> str:
    n = rows.case.nunique()
    return f"{n} case{'s' if n != 1 else ''}"


def _dtypes_short(f: Finding) -> str:
    n = f.rows.dtype.nunique()
    return "all 4 dtypes" if n == 4 else f.facts["dtypes"]


def _where(f: Finding) -> str:
    """'torch, cpu/gpu': the frameworks and devices of an entry, for its line in the list."""
    return f"{'/'.join(sorted(set(f.rows.backend)))}, {'/'.join(sorted(set(f.rows.device)))}"


def _returns(f: Finding) -> str:
    return f.title.split(": ", 1)[-1].split(" where")[0]


def render_md(findings: list[Finding], unsupported: list[str] | None = None) -> str:
    defects = [f for f in findings if f.kind == "defect"]
    conv = [f for f in findings if f.kind == "convention"]
    out = ["## Findings", "",
           _wrap(f"{len(defects)} defect(s) of the frameworks' own implementations (`fused`) and plug-ins, derived "
                 "from the rows below by `suite/findings.py` (rules: docs/findings.md). The suite's hand-written "
                 "formulas (`naive`, `shifted`, ...) are not counted: their failures are the catalog's lesson."), ""]
    out += [_wrap(f"{i}. {f.title} — {_where(f)}; {_dtypes_short(f)}; {_cases(f.rows)}")
            for i, f in enumerate(defects, 1)]
    out += [""] if defects else []
    for i, f in enumerate(defects, 1):
        out += [f"### {i}. {f.title}", ""]
        out += [_wrap(f"- **{k}**: {v}") for k, v in f.facts.items()]
        out += [_wrap(f"- **mechanism**: {f.mechanism}"), ""]
        if f.reproducer:
            out += ["```python", f.reproducer, "```", ""]
        else:
            out += [_wrap(f"_no reproducer: {f.no_reproducer}_"), ""]
    if conv:
        out += ["### Conventions (not defects)", "",
                _wrap("Where the exact answer is undefined (a +inf or NaN logit, a fully masked row) the suite's "
                      "convention is the IEEE NaN; these frameworks return another value there."), ""]
        t = pd.DataFrame([{"framework": f.facts["framework"], "call": f.title.split(": ", 1)[0],
                           "returns": _returns(f), "dtypes": f.facts["dtypes"],
                           "cases": f.rows.case.nunique()} for f in conv])
        out += [t.to_markdown(index=False), ""]
    if unsupported:
        out += [_wrap("Not run (`unsupported`): " + "; ".join(unsupported) + "."), ""]
    return "\n".join(out)


def render_html(findings: list[Finding], unsupported: list[str] | None = None) -> str:
    """The same content as render_md, as HTML (reproducers in <pre>, each entry's details collapsible)."""
    import html

    e = html.escape
    defects = [f for f in findings if f.kind == "defect"]
    conv = [f for f in findings if f.kind == "convention"]
    out = [f"<h2>Findings</h2><p class='note'>{len(defects)} defect(s) of the frameworks' own implementations "
           "(<code>fused</code>) and plug-ins, derived from the rows below by suite/findings.py (rules: "
           "docs/findings.md); the suite's hand-written formulas are not counted.</p>"]
    if defects:
        out.append("<ol>" + "".join(f"<li>{e(f.title)} — {e(_where(f))}; {e(_dtypes_short(f))}; {_cases(f.rows)}</li>"
                                    for f in defects) + "</ol>")
    for i, f in enumerate(defects, 1):
        items = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in f.facts.items())
        repro = (f"<details><summary>reproducer</summary><pre><code>{e(f.reproducer)}</code></pre></details>"
                 if f.reproducer else f"<p><em>no reproducer: {e(f.no_reproducer)}</em></p>")
        out.append(f"<h3>{i}. {e(f.title)}</h3><ul>{items}<li><b>mechanism</b>: {e(f.mechanism)}</li></ul>{repro}")
    if conv:
        rows = "".join(f"<tr><td>{e(f.facts['framework'])}</td><td>{e(f.title.split(': ', 1)[0])}</td>"
                       f"<td>{e(_returns(f))}</td><td>{e(f.facts['dtypes'])}</td><td>{f.rows.case.nunique()}</td></tr>"
                       for f in conv)
        out.append("<h3>Conventions (not defects)</h3><table><tr><th>framework</th><th>call</th><th>returns</th>"
                   f"<th>dtypes</th><th>cases</th></tr>{rows}</table>")
    if unsupported:
        out.append(f"<p class='note'>Not run (unsupported): {e('; '.join(unsupported))}.</p>")
    return "".join(out)


# --- end of run ---------------------------------------------------------------------------------------

def _first_line(message: str) -> str:
    line = str(message).strip().split("\n", 1)[0]
    return (line[:70] + "…") if len(line) > 70 else line


def reasons(df: pd.DataFrame, verdict: str, limit: int = 4) -> str:
    """'unsupported 96: torch float16 logsumexp 'not implemented for Half' (48); ...' (empty if none)."""
    rows = df[df.verdict == verdict] if len(df) else df
    if rows.empty:
        return ""
    msg = rows.message.map(_first_line)
    parts = []
    for (backend, m), g in rows.assign(_m=msg).groupby(["backend", "_m"], observed=True):
        parts.append((len(g), f"{backend} {_join(sorted(set(g.dtype)), 2)} {_join(sorted(set(g.op)), 2)} "
                               f"'{m}' ({len(g)})"))
    parts.sort(key=lambda p: -p[0])
    more = f"; +{len(parts) - limit} more" if len(parts) > limit else ""
    return f"{verdict} {len(rows)}: " + "; ".join(p for _, p in parts[:limit]) + more


def summary_lines(df: pd.DataFrame, limit: int = SUMMARY_LINES) -> list[str]:
    """At most `limit` lines naming the run's findings, then the reasons of unsupported and error rows."""
    found = derive(df, reproducers=False)
    defects = [f for f in found if f.kind == "defect"]
    conv = [f for f in found if f.kind == "convention"]
    lines = [f"findings: {len(defects)} defect(s) of the frameworks' own implementations"
             + (f", {len(conv)} convention(s)" if conv else "") + (":" if defects else "")]
    shown = defects[: limit - 1] if len(defects) > limit - 1 else defects
    for f in shown:
        lines.append(f"  {f.title} [{f.facts['dtypes']}; {_cases(f.rows)}; worst "
                     f"{f.facts['worst']}]")
    if len(defects) > len(shown):
        lines[-1] = f"  ... and {len(defects) - len(shown) + 1} more (python -m suite report)"
    for v in ("unsupported", "error"):
        r = reasons(df, v)
        if r:
            lines.append(r)
    return lines
