"""`python -m suite report`: the result store as the tables and plots people paste into a README or a
paper: a stability matrix, an accuracy table, a speed table, a version table and two plots, written
as report.md (pandas `to_markdown`), one self-contained report.html (inline CSS, images embedded as
data URIs: readable from disk with no server), the PNGs and every table as CSV.

The main tables use the newest version of each framework per device; older versions appear in the
version table (the same judgement as `python -m suite compare`). Of several runs of one framework version,
those made in the locked set (constraints/lock-cpu.txt) count before runs made outside it (`nox -s
latest`: the newest releases), which fill in only what no locked run covers.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from suite import device_diff
from suite.compare import (
    ACC_KEY,
    SPEED_KEY,
    Thresholds,
    compare,
    known_packages,
    latest,
    min_runs,
    run_packages,
    side,
    summary_table,
)
from suite.modes import native_mode
from suite.ops import IMPLS, OPS, PASSES, STABLE_IMPLS
from suite.selection import UsageError
from suite.store import Store

DTYPE_ORDER = ("float16", "bfloat16", "float32", "float64")
BACKEND_ORDER = ("numpy", "torch", "tensorflow", "jax")
# (batch, vocab) shown in the speed table when the store has them: the LLM-sized rows people ask about
CANONICAL_SHAPES = ((4096, 32768), (512, 131072), (256, 32768), (64, 131072))
SPEED_DTYPES = ("float32", "bfloat16")


def _version_key(v: str):
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(v))
    except InvalidVersion:
        return (1, v)


def _ordered(values, order) -> list:
    values = list(dict.fromkeys(values))
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


@dataclass
class Data:
    accuracy: pd.DataFrame  # the latest run's row per configuration and version
    timing: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    raw: dict[str, pd.DataFrame] = field(default_factory=dict)  # every run (the version table pools timings)
    envs: dict[str, dict] = field(default_factory=dict)  # run id -> {table: env.json} (Store.runs())
    off_lock: dict[str, str] = field(default_factory=dict)  # run id -> how its packages differ from the lock

    def newest(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rows of the newest version of each backend on each device."""
        if df.empty:
            return df
        keep = []
        for (_, _), g in df.groupby(["backend", "device"], observed=True):
            newest = max(g.backend_version.unique(), key=_version_key)
            keep.append(g[g.backend_version == newest])
        return pd.concat(keep, ignore_index=True)


def off_lock(envs: dict[str, dict], ids, pins: dict[str, str] | None = None) -> dict[str, str]:
    """run id -> 'ml-dtypes 0.7.0 (lock 0.6.0), ...' for the runs whose env.json records a locked package at
    another version than the lock's (packages a run lacks are not counted). A run that records no package
    versions (an env.json from before they were) counts as locked."""
    from suite.results import read_lock

    if pins is None:
        try:
            pins = read_lock()
        except OSError:
            return {}
    out = {}
    for r in ids:
        rec = run_packages(envs, r) or {}
        diff = [f"{n} {rec[n]} (lock {v})" for n, v in sorted(pins.items()) if n in rec and rec[n] != v]
        if diff:
            out[str(r)] = ", ".join(diff)
    return out


def prefer_locked(df: pd.DataFrame, off: dict[str, str] | set[str]) -> pd.DataFrame:
    """Drop the rows of off-lock runs of a framework version, device and mode that a locked run covers."""
    if df.empty or not off:
        return df
    from suite.modes import fill_mode

    df = fill_mode(df)
    is_off = df.run_id.astype(str).isin(list(off))
    group = [df[c].astype(str) for c in ("backend", "backend_version", "device", "mode")]
    covered = (~is_off).groupby(group).transform("any")
    return df[~(is_off & covered)]


def load(store: Store, runs: list[str] | None) -> Data:
    problems: list[str] = []
    raw, newest_run = {}, {}
    off: dict[str, str] = {}
    for t in ("accuracy", "timing"):
        df = store.load(t, problems)
        if runs:
            df = df[df.run_id.astype(str).map(lambda r: any(r.startswith(x) for x in runs))]
        raw[t] = df
    envs = store.runs(problems)  # after the tables, so a malformed env.json is named once
    for df in raw.values():
        off.update(off_lock(envs, {str(r) for r in df.get("run_id", [])}))
    for t, df in raw.items():
        newest_run[t] = latest(prefer_locked(df, off), ["backend_version",
                                                         *(ACC_KEY if t == "accuracy" else SPEED_KEY)])
    if newest_run["accuracy"].empty and newest_run["timing"].empty:
        where = f"runs {', '.join(runs)}" if runs else f"store {store.root}"
        skipped = f" ({len(problems)} file(s) or run(s) skipped: {problems[0]}...)" if problems else ""
        raise UsageError(f"no results in {where}{skipped}; write some with `python -m suite run` / "
                         "`python -m suite bench` (or `nox -s numpy`)")
    return Data(newest_run["accuracy"], newest_run["timing"], problems, raw, envs, off)


# --- 1. stability matrix ---------------------------------------------------------------------------

def verdict_cell(verdicts: pd.Series) -> str:
    """'✔ 78/78' when every case is ok; else '✘ 61/78: 12 nonfinite, 5 inaccurate'."""
    n = len(verdicts)
    counts = verdicts.value_counts()
    ok = int(counts.get("ok", 0))
    if ok == n:
        return f"✔ {n}/{n}"
    if int(counts.get("unsupported", 0)) == n:
        return "— unsupported"
    bad = ", ".join(f"{int(counts[v])} {v}" for v in ("nonfinite", "wrong_special", "mutates_input",
                                                       "changes_settings", "inaccurate", "error", "unsupported")
                    if counts.get(v, 0))
    return f"✘ {ok}/{n}: {bad}"


def stability(acc: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{'cpu forward': table, ...}: rows op x impl, columns backend x dtype."""
    out = {}
    for device in _ordered(acc.device.unique(), ("cpu", "gpu")):
        for pass_ in PASSES:
            sub = acc[(acc.device == device) & (acc["pass"] == pass_)]
            if sub.empty:
                continue
            cells = sub.groupby(["op", "impl", "backend", "dtype"]).verdict.agg(verdict_cell)
            cells = cells.unstack(["backend", "dtype"])
            cols = [(b, d) for b in _ordered(sub.backend.unique(), BACKEND_ORDER)
                    for d in _ordered(sub.dtype.unique(), DTYPE_ORDER) if (b, d) in cells.columns]
            impls = _ordered(sub.impl.unique(), IMPLS)  # built-ins, then plug-ins by name
            rows = [(o, i) for o in OPS for i in impls if (o, i) in cells.index]
            t = cells.reindex(index=rows, columns=cols).fillna("")
            t.columns = [f"{b} {d}" for b, d in t.columns]
            t.index = [f"{o} · {i}" for o, i in t.index]
            t.index.name = "op · impl"
            out[f"{device} {pass_}"] = t
    return out


def promotions(acc: pd.DataFrame) -> pd.DataFrame:
    """Rows a framework computed in another dtype than the one named (graded after rounding back)."""
    if "out_dtype" not in acc:
        return pd.DataFrame()
    sub = acc[acc.out_dtype.notna() & (acc.out_dtype.astype(str) != acc.dtype.astype(str))]
    if sub.empty:
        return pd.DataFrame()
    t = sub.groupby(["device", "backend", "dtype", "out_dtype", "impl", "pass"]).op.agg(
        lambda o: ", ".join(_ordered(o.unique(), OPS))).rename("ops")
    return t.reset_index()


def temperature_table(acc: pd.DataFrame) -> pd.DataFrame:
    """Cases with T != 1, forward: `temperature` (seed 002's formula on z divided by a Python float T by the
    framework itself) next to `naive` (the same formula on the suite's correctly rounded z / T): where they
    differ, the framework's division, and its promotion of the scalar T, is the cause."""
    sub = acc[(acc.temperature.astype(float) != 1.0) & acc.impl.isin(["naive", "temperature"])
              & (acc["pass"] == "forward")]
    if sub.empty:
        return pd.DataFrame()
    cells = sub.groupby(["device", "impl", "backend", "dtype"]).verdict.agg(verdict_cell).unstack("dtype")
    cells = cells[[d for d in DTYPE_ORDER if d in cells.columns]].fillna("")
    return cells.reset_index()


# --- 2. accuracy table ------------------------------------------------------------------------------

def accuracy(acc: pd.DataFrame) -> pd.DataFrame:
    """Median and worst graded ULP error of the stable implementations over the cases whose exact
    answer is finite and that came back finite, next to the bound (4 + 2 ceil(log2 n) forward,
    twice that backward, in ULPs of the tested dtype) and the count over it."""
    sub = acc[acc.impl.isin(STABLE_IMPLS) & acc.exact_finite.astype(bool) & acc.ulp_err_scaled.notna()
              & acc.verdict.isin(["ok", "inaccurate"])]
    if sub.empty:
        return pd.DataFrame()
    g = sub.groupby(["device", "pass", "backend", "op", "impl", "dtype"])
    t = pd.DataFrame({"median ULP": g.ulp_err_scaled.median(), "worst ULP": g.ulp_err_scaled.max(),
                      "bound": g.ulp_bound.agg(lambda b: f"{b.min():g}–{b.max():g}" if b.min() != b.max()
                                               else f"{b.min():g}"),
                      "over bound": g.apply(lambda x: int((x.ulp_err_scaled > x.ulp_bound).sum()),
                                            include_groups=False),
                      "cases": g.size()}).reset_index()
    rank = {"backend": BACKEND_ORDER, "op": OPS, "impl": IMPLS, "dtype": DTYPE_ORDER, "pass": PASSES}
    t = t.sort_values(["device", *rank], key=lambda s: s.map({v: i for i, v in enumerate(rank[s.name])})
                      if s.name in rank else s)
    return t.reset_index(drop=True)


def accuracy_wide(t: pd.DataFrame) -> pd.DataFrame:
    """The accuracy table with one 'median / worst' column per dtype: short enough to read."""
    if t.empty:
        return t
    cell = t.apply(lambda r: f"{r['median ULP']:.2g} / {r['worst ULP']:.3g}"
                   + (f" ({r['over bound']} over)" if r["over bound"] else ""), axis=1)
    w = t.assign(cell=cell).pivot_table(index=["device", "pass", "backend", "op", "impl"], columns="dtype",
                                        values="cell", aggfunc="first", sort=False)
    w = w[[d for d in DTYPE_ORDER if d in w.columns]]
    bounds = t.groupby(["device", "pass", "backend", "op", "impl"], sort=False).bound.first()
    w["bound (ULP)"] = bounds
    return w.reset_index()


# --- 3. speed table ---------------------------------------------------------------------------------

def speed(tim: pd.DataFrame) -> pd.DataFrame:
    """GB/s and % of the device's copy bandwidth for the framework's own (fused) op at the canonical
    shapes present in the store."""
    ok = tim[tim.gbps.notna() & (tim.impl == "fused") & tim.dtype.isin(SPEED_DTYPES)]
    if "mode" in ok:  # a framework's other mode beside it, e.g. "torch (compiled)"
        ok = ok.assign(backend=[b if m == native_mode(b) else f"{b} ({m})" for b, m in zip(ok.backend, ok["mode"],
                                                                                          strict=True)])
    shapes = set(zip(ok.batch, ok.vocab, strict=True))
    want = [s for s in CANONICAL_SHAPES if s in shapes]
    ok = ok[[(b, v) in want for b, v in zip(ok.batch, ok.vocab, strict=True)]]
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(shape=[f"{b}×{v}" for b, v in zip(ok.batch, ok.vocab, strict=True)],
                   cell=[f"{g:.1f} ({p:.0f}%)" for g, p in zip(ok.gbps, ok.pct_of_copy, strict=True)])
    t = ok.pivot_table(index=["device", "shape", "dtype", "op", "pass"], columns="backend", values="cell",
                       aggfunc="first")
    t = t[_ordered(t.columns, [f"{b}{m}" for b in BACKEND_ORDER for m in ("", " (eager)", " (compiled)")])]
    t = t.fillna("—")
    copy = ok.groupby("device").copy_gbps.median().round(1)
    t = t.reset_index()
    t.insert(1, "copy GB/s", t.device.map(copy))
    order = {f"{b}×{v}": i for i, (b, v) in enumerate(CANONICAL_SHAPES)}
    return t.sort_values(["device", "shape", "dtype", "op", "pass"],
                         key=lambda s: s.map(order) if s.name == "shape" else s).reset_index(drop=True)


# --- 3b. eager vs compiled ---------------------------------------------------------------------------

PAIR_KEY = ["backend", "backend_version", "device", "dtype", "op", "impl", "case", "pass"]
MODE_FACTOR = 2.0  # a compiled error more than this many times the eager one (errors below 1 ULP count as 1)


def native(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in each framework's own mode (JAX compiled, the others eager): the main tables' rows."""
    if df.empty or "mode" not in df:
        return df
    return df[df["mode"].astype(str) == df.backend.astype(str).map(native_mode)]


def eager_vs_compiled(acc: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per backend x device x dtype x pass, every row that differs): rows of one framework version
    run in both modes (the latest run of each), paired by case, op, impl and pass; a row differs when its
    verdict differs or when the compiled graded error is more than MODE_FACTOR times the eager one."""
    if acc.empty or "mode" not in acc:
        return pd.DataFrame(), pd.DataFrame()
    e, c = acc[acc["mode"] == "eager"], acc[acc["mode"] == "compiled"]
    j = e.merge(c, on=PAIR_KEY, suffixes=(" eager", " compiled"))
    if j.empty:
        return pd.DataFrame(), pd.DataFrame()
    ee, ce = j["ulp_err_scaled eager"].astype(float), j["ulp_err_scaled compiled"].astype(float)
    growth = np.maximum(ce, 1.0) / np.maximum(ee, 1.0)
    j = j.assign(**{"error ratio": growth.round(3), "verdict differs": j["verdict eager"] != j["verdict compiled"],
                    "error grew": growth > MODE_FACTOR})
    g = j.groupby(["backend", "backend_version", "device", "dtype", "pass"])
    summ = pd.DataFrame({"rows compared": g.size(), "verdict differs": g["verdict differs"].sum(),
                         "error grew > x2": g["error grew"].sum(),
                         "error shrank > x2": g["error ratio"].agg(lambda r: int((r < 1 / MODE_FACTOR).sum()))})
    summ = summ.reset_index()
    summ = summ.sort_values(["backend", "device", "dtype", "pass"], key=lambda s: s.map(
        {v: i for i, v in enumerate(DTYPE_ORDER if s.name == "dtype" else BACKEND_ORDER if s.name == "backend"
                                    else PASSES if s.name == "pass" else [])}).fillna(9) if s.name != "device"
        else s).reset_index(drop=True)
    diff = j[j["verdict differs"] | j["error grew"]]
    if diff.empty:
        return summ, pd.DataFrame({"rows that differ": ["none: every paired row has the same verdict and an error "
                                                        f"within x{MODE_FACTOR:g}"]})
    cols = [*PAIR_KEY, "verdict eager", "verdict compiled", "ulp_err_scaled eager", "ulp_err_scaled compiled",
            "ulp_bound compiled", "error ratio", "message compiled"]
    diff = diff[cols].rename(columns={"ulp_bound compiled": "bound"})
    return summ, diff.sort_values(PAIR_KEY).reset_index(drop=True)


# --- 4. version table -------------------------------------------------------------------------------

DEFAULT_THRESHOLDS = Thresholds()


def versions(data: Data, th: Thresholds = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Each pair of consecutive versions of a framework on a device, judged as `compare` judges (speed on
    the per-run times of every timing run of a version: regression, improvement, no change or
    inconclusive, with the configurations' median run-to-run noise)."""
    raw = data.raw or {"accuracy": data.accuracy, "timing": data.timing}
    raw = {t: prefer_locked(df, data.off_lock) for t, df in raw.items()}
    rows = []
    both = pd.concat([raw["accuracy"][["backend", "device", "backend_version"]],
                      raw["timing"][["backend", "device", "backend_version"]]]).drop_duplicates()
    for (backend, device), g in both.groupby(["backend", "device"]):
        vers = sorted(g.backend_version.unique(), key=_version_key)
        for old, new in zip(vers, vers[1:], strict=False):
            def pick(v, backend=backend, device=device):
                sel = {t: df[(df.backend == backend) & (df.device == device) & (df.backend_version == v)]
                       for t, df in raw.items()}
                return side(f"{backend}=={v}", sel["accuracy"], sel["timing"])
            result = compare(pick(old), pick(new), th)
            s = summary_table(result).set_index("table")
            sp = result.speed
            runs = f"{int(sp.n_runs_base.min())}+{int(sp.n_runs_new.min())}" if "n_runs_base" in sp else ""
            noise = sp.noise.median() if "noise" in sp and sp.noise.notna().any() else np.nan
            rows.append({"backend": backend, "device": device, "base": old, "new": new,
                         "accuracy compared": s.loc["accuracy", "compared"],
                         "accuracy regressions": s.loc["accuracy", "regressions"],
                         "accuracy improvements": s.loc["accuracy", "improvements"],
                         "speed compared": s.loc["speed", "compared"], "timing runs": runs,
                         "speed regressions": s.loc["speed", "regressions"],
                         "speed improvements": s.loc["speed", "improvements"],
                         "speed no change": s.loc["speed", "no change"],
                         "speed inconclusive": s.loc["speed", "inconclusive"],
                         "run-to-run noise": "" if np.isnan(noise) else f"{noise:.1%}",
                         "compare": f"python -m suite compare {backend}=={old} {backend}=={new}"})
    pairs = package_pairs(data, th) if data.envs else pd.DataFrame()
    return pd.concat([pd.DataFrame(rows), pairs], ignore_index=True) if len(pairs) else pd.DataFrame(rows)


MAX_RUNS_LISTED = 3


def _run_ids(data: Data) -> list[str]:
    raw = data.raw or {"accuracy": data.accuracy, "timing": data.timing}
    return sorted({str(r) for df in raw.values() for r in df.get("run_id", [])})


def _differing_packages(data: Data) -> dict[str, dict[str, str | None]]:
    """package -> {run id: its version, None where not recorded}, for the packages whose recorded versions
    differ among the report's runs, and the row-changing ones some runs do not record. The frameworks (and
    tensorflow-cpu) are left to the version table's own rows."""
    from packaging.utils import canonicalize_name

    from suite.results import ROW_PACKAGES

    ids = _run_ids(data)
    known = {r: known_packages(data.envs, r) for r in ids}
    row_changing = {canonicalize_name(n) for n in ROW_PACKAGES}
    raw = data.raw or {"accuracy": data.accuracy, "timing": data.timing}
    backends = {str(b) for df in raw.values() for b in df.get("backend", [])}
    out = {}
    for name in sorted({n for k in known.values() for n in k}):
        if name in backends or name.removesuffix("-cpu") in backends:
            continue
        per_run = {r: known[r].get(name) for r in ids}
        versions = {v for v in per_run.values() if v is not None}
        if len(versions) > 1 or (name in row_changing and versions and None in per_run.values()):
            out[name] = per_run
    return out


def package_table(data: Data) -> pd.DataFrame:
    """package | version | runs: the package versions that differ among the report's runs (env.json's
    `packages`; an older env.json knows only numpy, pandas and the frameworks: the rest is `not recorded`)."""
    rows = []
    ids = _run_ids(data)

    def listed(runs: list[str]) -> str:
        more = f" and {len(runs) - MAX_RUNS_LISTED} more" if len(runs) > MAX_RUNS_LISTED else ""
        return f"{len(runs)}: {', '.join(runs[:MAX_RUNS_LISTED])}{more}"

    for name, per_run in _differing_packages(data).items():
        by_version: dict[str | None, list[str]] = {}
        for r, v in per_run.items():
            by_version.setdefault(v, []).append(r)
        for v in sorted((v for v in by_version if v is not None), key=_version_key):
            rows.append({"package": name, "version": v, "runs": listed(by_version[v])})
        for label, old in (("not installed", False), ("not recorded", True)):
            runs = [r for r in by_version.get(None, []) if (run_packages(data.envs, r) is None) == old]
            if runs:
                rows.append({"package": name, "version": label, "runs": listed(runs)})
    if not rows and ids:
        old = [r for r in ids if run_packages(data.envs, r) is None]
        rows.append({"package": "(every package)", "version": "not recorded" if old else "the same in every run",
                     "runs": listed(old or ids)})
    return pd.DataFrame(rows, columns=["package", "version", "runs"])


def package_pairs(data: Data, th: Thresholds = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Consecutive recorded versions of each package that differs among runs (frameworks aside: they have
    their own rows), judged as `python -m suite compare PKG==OLD PKG==NEW` judges, on the frameworks and
    devices both sides ran."""
    raw = data.raw or {"accuracy": data.accuracy, "timing": data.timing}
    rows = []
    for name, per_run in _differing_packages(data).items():
        vers = sorted({v for v in per_run.values() if v is not None}, key=_version_key)
        for old, new in zip(vers, vers[1:], strict=False):
            runs = {v: [r for r, x in per_run.items() if x == v] for v in (old, new)}
            sel = {v: {t: df[df.run_id.astype(str).isin(runs[v])] for t, df in raw.items()} for v in (old, new)}
            for device in sorted({d for v in sel.values() for df in v.values() for d in df.get("device", [])}):
                common = sorted(set.intersection(*[
                    {b for df in sel[v].values() for b in df[df.device == device].get("backend", [])}
                    for v in (old, new)]))
                if not common:
                    continue
                sides = [side(f"{name}=={v}", *[df[(df.device == device) & df.backend.isin(common)]
                                                 for df in (sel[v]["accuracy"], sel[v]["timing"])]) for v in (old, new)]
                s = summary_table(compare(*sides, th)).set_index("table")
                rows.append({"backend": ", ".join(common), "device": device, "base": f"{name} {old}",
                             "new": f"{name} {new}", "accuracy compared": s.loc["accuracy", "compared"],
                             "accuracy regressions": s.loc["accuracy", "regressions"],
                             "accuracy improvements": s.loc["accuracy", "improvements"],
                             "speed compared": s.loc["speed", "compared"], "timing runs": "",
                             "speed regressions": s.loc["speed", "regressions"],
                             "speed improvements": s.loc["speed", "improvements"],
                             "speed no change": s.loc["speed", "no change"],
                             "speed inconclusive": s.loc["speed", "inconclusive"], "run-to-run noise": "",
                             "compare": f"python -m suite compare {name}=={old} {name}=={new}"})
    return pd.DataFrame(rows)


# --- 5. plots ---------------------------------------------------------------------------------------

def logit_magnitude() -> dict[str, float]:
    """Largest finite |z / T| of each catalog case: the x axis of the breakdown plot."""
    from cases import CASES

    out = {}
    for c in CASES:
        z = np.abs(c.logits / c.temperature)
        z = z[np.isfinite(z)]
        out[c.name] = float(z.max()) if z.size else 0.0
    return out


def plot_error_vs_magnitude(acc: pd.DataFrame, path: Path, op: str = "softmax") -> bool:
    """Worst graded ULP error over backends against logit magnitude, a panel per dtype, a series per
    implementation; non-finite results sit on the top line. Vertical lines: ln(max) of the dtype,
    where exp overflows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from suite.dtypes import finfo

    mag = logit_magnitude()
    sub = acc[(acc.op == op) & (acc["pass"] == "forward") & acc.case.isin(list(mag)) & acc.exact_finite.astype(bool)]
    if sub.empty:
        return False
    dtypes = _ordered(sub.dtype.unique(), DTYPE_ORDER)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(4.2 * len(dtypes), 3.8), squeeze=False, sharey=True)
    top = 1e7
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        d = sub[sub.dtype == dtype]
        for k, impl in enumerate(_ordered(d.impl.unique(), IMPLS)):
            if impl == "temperature":  # the same numbers as naive (docs/implementations.md)
                continue
            g = d[d.impl == impl].groupby("case")
            worst = g.ulp_err_scaled.max().where(g.n_nonfinite.max().fillna(0) == 0, top)
            worst = worst.fillna(top).clip(lower=1e-2, upper=top)
            x = np.array([max(mag[c], 1e-1) for c in worst.index]) * (1 + 0.06 * k)  # small offset per impl
            ax.scatter(x, worst.values, s=14, alpha=0.75, label=impl, marker="os^Dv"[k % 5])
        ln_max = float(np.log(float(finfo(dtype).max)))
        ax.axvline(ln_max, color="grey", lw=0.8, ls=":")
        ax.annotate(f"ln max = {ln_max:.4g}", (ln_max, 2e-2), fontsize=7, color="grey", rotation=90, ha="right")
        ax.axhline(top, color="red", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{op} forward, {dtype}", fontsize=10)
        ax.set_xlabel("largest |logit / T| in the case")
        ax.grid(True, which="major", lw=0.3)
    axes[0][0].set_ylabel(f"worst graded ULP error over backends\n(top line: non-finite, {top:.0e})")
    axes[0][-1].legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_speed(tim: pd.DataFrame, path: Path) -> bool:
    from suite.bench import plot_gbps

    sub = tim[(tim.impl == "fused") & tim.gbps.notna() & tim.op.isin(["softmax", "cross_entropy"])]
    if sub.empty:
        return False
    plot_gbps(sub, path)
    return True


# --- writing ---------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1500px;
 color:#1d1d1f;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{margin-top:1.4em}
table{border-collapse:collapse;font-size:12px;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #d0d0d0;padding:3px 6px;text-align:left;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}tr:nth-child(even) td{background:#fafafa}
td.ok{background:#e6f6e6!important;color:#12621f}td.bad{background:#fde8e8!important;color:#9b1c1c}
td.na{color:#888}img{max-width:100%;border:1px solid #eee}p.note{color:#555;max-width:70em}
"""


def _html_table(df: pd.DataFrame, index: bool) -> str:
    text = (df.reset_index() if index else df).to_html(index=False, escape=True, border=0, na_rep="")
    text = re.sub(r"<td>✔", '<td class="ok">✔', text)
    text = re.sub(r"<td>✘", '<td class="bad">✘', text)
    return re.sub(r"<td>—", '<td class="na">—', text)


# Marks the page with how many images the browser decoded, so a headless-browser test can check the
# embedded plots really render (suite/tests/test_report.py).
DECODED = ("<script>addEventListener('load',()=>{document.documentElement.dataset.imagesDecoded="
           "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length})</script>")


@dataclass
class Section:
    title: str
    note: str
    tables: dict[str, tuple[pd.DataFrame, bool]]  # subtitle -> (table, show index)
    image: str | None = None
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)  # subtitle -> the CSV, where it differs
    md: str = ""  # pre-rendered content in place of note and tables (Findings: suite/findings.py)
    html: str = ""


def build(data: Data, out: Path) -> list[Section]:
    acc_all, tim = data.newest(data.accuracy), data.newest(data.timing)
    acc = native(acc_all)  # the main tables: each framework in its own mode; the other mode in its section
    sections = [findings_section(acc_all)]
    stab = stability(acc) if len(acc) else {}
    sections.append(Section(
        "Stability matrix",
        "Verdict of every catalog case, per op and implementation (rows) and framework and dtype (columns), "
        "for the newest version of each framework. ✔ n/n: every case ok; ✘ k/n: k ok and the rest as counted "
        "(nonfinite: NaN/inf where the exact answer is finite; wrong_special: where the exact answer is itself "
        "NaN or ±inf, another value, e.g. NaN where the exact logsumexp is +inf; inaccurate: finite but past "
        "the error bound).",
        {k: (v, True) for k, v in stab.items()}))
    sections.append(Section(
        "Temperature: the frameworks' own division by T",
        "Forward rows of the cases with T ≠ 1, all ops, of seed 002's formula exp(x) / sum(exp(x)). `naive` "
        "receives x = z / T correctly rounded by the suite (the same bits in every framework); `temperature` "
        "receives z and divides by the Python float T itself, as seed 002 writes `exp(input / t)`, and is "
        "graded against the exact z / T with that division's rounding allowed. Where the two differ, the "
        "framework's division by the scalar is the cause (e.g. T rounded to the tensor's float16, or a "
        "subnormal T flushed to zero).",
        {"": (temperature_table(acc) if len(acc) else pd.DataFrame(), False)}))
    sections.append(Section(
        "Promoted dtypes",
        "Rows whose result came back in another dtype than the one tested (e.g. numpy's bfloat16 divided by "
        "a Python float becomes float32): they are graded after rounding to the tested dtype, so the "
        "verdict is what a user who casts back gets, but the computation did not run in that dtype.",
        {"": (promotions(acc) if len(acc) else pd.DataFrame(), False)}))
    acc_long = accuracy(acc) if len(acc) else pd.DataFrame()
    sections.append(Section(
        "Accuracy of the stable implementations",
        "Median / worst graded ULP error (in ULPs of the tested dtype) of shifted, shifted_log1p and fused, over "
        "the cases whose exact answer is finite and that came back finite; the bound is 4 + 2⌈log2 n⌉ "
        "forward and twice that backward (n classes), so it ranges over the catalog's widths.",
        {"": (accuracy_wide(acc_long), False)}, csv={"": acc_long}))
    sp = speed(tim) if len(tim) else pd.DataFrame()
    sections.append(Section(
        "Speed",
        "GB/s of minimal memory traffic (reads + writes the op must do) of the framework's own op, and in "
        "brackets the share of the same device's measured copy bandwidth, at the canonical shapes present "
        "in the store (median of at least 5 timed rounds; CPU timings are from a 2-core VM and noisy).",
        {"": (sp, False)}))
    summ, diff = eager_vs_compiled(acc_all)
    other = acc_all[~acc_all.index.isin(acc.index)] if len(acc_all) else acc_all
    sections.append(Section(
        "Eager vs compiled",
        "The same framework version run eagerly and under its graph compiler (torch.compile with Inductor, "
        "tf.function(jit_compile=True) with XLA; JAX is only run compiled), the latest run of each mode, "
        "paired by case, op, implementation and pass. Listed: every row whose verdict differs between the "
        f"modes, or whose graded error compiled is more than x{MODE_FACTOR:g} the eager one (errors below 1 "
        "ULP count as 1, as in `compare`). Below them, the stability matrix of the compiled rows.",
        {"summary": (summ, False), "rows that differ": (diff, False),
         **{f"compiled: {k}": (v, True) for k, v in (stability(other) if len(other) else {}).items()}}))
    sections.append(device_diff.section(acc_all, data.envs))
    ver = versions(data)
    sections.append(Section(
        "Versions",
        "Consecutive versions of a framework in the store, judged as `python -m suite compare` judges: an "
        "accuracy regression is a worse verdict or an error grown past x2. Speed is judged per configuration "
        f"on each timing run's {'fastest' if DEFAULT_THRESHOLDS.statistic == 'min' else 'median'} round (each run a "
        "fresh process; `python -m suite ab` "
        "makes them, "
        f"interleaved): a regression needs the exact {1 - DEFAULT_THRESHOLDS.alpha:.1%} interval on the time "
        f"ratio above 1 and the ratio above {1 + DEFAULT_THRESHOLDS.min_effect:g}; no change means the interval "
        "lies within ±10%; anything else is inconclusive: too few runs (fewer than "
        f"{min_runs(DEFAULT_THRESHOLDS.alpha)} per version) or run-to-run noise too large to tell. The noise "
        "column is the median over configurations of the run-to-run spread of those per-run times. Rows whose "
        "base and new name another package (e.g. ml-dtypes 0.6.0 -> 0.7.0) pair the runs whose env.json records "
        "each version (`python -m suite compare ml_dtypes==0.6.0 ml_dtypes==0.7.0`), on the frameworks both ran. "
        "Below: the other packages whose versions differ among the runs (every package of the lock is recorded "
        "in env.json; an older env.json knows only numpy, pandas and the frameworks, the rest is `not "
        "recorded`). Of several runs of one framework version, those made in the locked set count first.",
        {"": (ver, False), "package versions that differ among runs": (package_table(data), False)}))
    images = []
    if len(acc) and plot_error_vs_magnitude(acc, out / "error_vs_magnitude.png"):
        images.append(("Where each implementation breaks down", "error_vs_magnitude.png",
                       "Worst graded ULP error over all frameworks for softmax forward, against the largest "
                       "|logit / T| of each catalog case; points on the dashed top line returned NaN/inf "
                       "where the exact answer is finite."))
    if len(tim) and plot_speed(tim, out / "gbps_vs_vocab.png"):
        images.append(("Throughput against vocabulary size", "gbps_vs_vocab.png",
                       "GB/s of the fused softmax and cross-entropy against the number of classes (solid "
                       "forward, dashed forward+backward), with each device's copy bandwidth dotted."))
    for title, name, note in images:
        sections.append(Section(title, note, {}, image=name))
    if data.problems:
        sections.append(Section(
            "Skipped",
            f"{len(data.problems)} file(s) or run(s) of the store could not be used and are left out of every "
            "table above: unreadable (truncated, failed page checksum), foreign, wrongly typed, or from a run "
            "that did not complete. `python -m suite report` exits with status 3 when this section is present.",
            {"": (pd.DataFrame({"skipped (path or run: reason)": data.problems}), False)}))
    return sections


def _csv_name(title: str, sub: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", f"{title} {sub}".lower()).strip("_") + ".csv"


def findings_section(acc: pd.DataFrame) -> Section:
    """What is broken where, first (suite/findings.py; docs/findings.md)."""
    from suite import findings

    found = findings.derive(acc) if len(acc) else []
    note = findings.reasons(findings.own(acc), "unsupported") if len(acc) else ""
    return Section("Findings", "", {}, md=findings.render_md(found, [note] if note else None),
                   html=findings.render_html(found, [note] if note else None))


MATRICES = "report-matrices.md"  # the dense tables, linked from report.md (which stays short)
DENSE_BYTES, DENSE_WIDTH = 2500, 400  # report.md: the findings and the small tables


def _dense(text: str) -> bool:
    return len(text) > DENSE_BYTES or max(map(len, text.split("\n"))) > DENSE_WIDTH


def _anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")


def render_md(sections: list[Section], header: str, moved: list[str] | None = None) -> str:
    """report.md; with `moved` given, dense tables go there (for MATRICES) and report.md links to them."""
    parts = [header]
    for s in sections:
        if s.md:
            parts.append(s.md)
            continue
        parts.append(f"## {s.title}\n\n{s.note}\n")
        if not s.tables and not s.image:
            parts.append("_no data in the store_\n")
        for sub, (df, index) in s.tables.items():
            if sub:
                parts.append(f"### {sub}\n")
            text = df.to_markdown(index=index) if len(df) else "_no data in the store_"
            if moved is not None and _dense(text):
                title = f"{s.title}: {sub}" if sub else s.title
                moved.append(f"## {title}\n\n{text}\n")
                text = (f"→ [{title}]({MATRICES}#{_anchor(title)}): {len(df)} rows × {df.shape[1]} columns, "
                        "on the second page")
            parts.append(text + "\n")
        if s.image:
            parts.append(f"![{s.title}]({s.image})\n")
    return "\n".join(parts)


def render_html(sections: list[Section], header: str, out: Path) -> str:
    body = [f"<h1>softmax-suite report</h1><p class='note'>{html.escape(header.split(chr(10), 2)[-1])}</p>"]
    for s in sections:
        if s.html:
            body.append(s.html)
            continue
        body.append(f"<h2>{html.escape(s.title)}</h2><p class='note'>{html.escape(s.note)}</p>")
        if not s.tables and not s.image:
            body.append("<p><em>no data in the store</em></p>")
        for sub, (df, index) in s.tables.items():
            if sub:
                body.append(f"<h3>{html.escape(sub)}</h3>")
            table = _html_table(df, index) if len(df) else "<p><em>no data in the store</em></p>"
            if len(df) and _dense(df.to_markdown(index=index)):  # collapsed, as report.md moves it
                table = f"<details><summary>{len(df)} rows × {df.shape[1]} columns</summary>{table}</details>"
            body.append(table)
        if s.image:
            data = base64.b64encode((out / s.image).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(s.title)}" src="data:image/png;base64,{data}">')
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>softmax-suite report</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}{DECODED}</body></html>\n")


def write(data: Data, out: Path, header: str) -> list[Path]:
    """Every output into `out` (the CLI passes a temporary folder and moves the files into place)."""
    out.mkdir(parents=True, exist_ok=True)
    sections = build(data, out)
    paths = []
    for s in sections:
        for sub, (df, index) in s.tables.items():
            if len(df):
                p = out / _csv_name(s.title, sub)
                if sub in s.csv:
                    df, index = s.csv[sub], False
                df.to_csv(p, index=index)
                paths.append(p)
        if s.image:
            paths.append(out / s.image)
    moved: list[str] = []
    (out / "report.md").write_text(render_md(sections, header, moved), encoding="utf-8")
    if moved:
        (out / MATRICES).write_text("\n".join(["# softmax-suite report: the dense tables\n",
                                                "Linked from [report.md](report.md).\n", *moved]), encoding="utf-8")
        paths.append(out / MATRICES)
    (out / "report.html").write_text(render_html(sections, header, out), encoding="utf-8")
    return [out / "report.md", out / "report.html", *paths]


def header(data: Data, store: Store) -> str:
    acc, tim = data.newest(data.accuracy), data.newest(data.timing)
    both = pd.concat([acc[["backend", "backend_version", "device"]], tim[["backend", "backend_version", "device"]]])
    vers = "; ".join(f"{b} {v} ({d})" for (b, v, d), _ in both.groupby(["backend", "backend_version", "device"]))
    runs = sorted(set(data.accuracy.get("run_id", [])) | set(data.timing.get("run_id", [])))
    return (f"# softmax-suite report\n\nBuilt by `python -m suite report` from the store `{store.root}` "
            f"({len(runs)} runs; {len(data.accuracy)} accuracy rows, {len(data.timing)} timings). "
            f"Main tables: {vers}."
            + (f" GPU rows: {gpu}." if (gpu := device_diff.gpu_sources(data.envs, [acc, tim])) else "")
            + (f" **{len(data.problems)} file(s) or run(s) skipped** (see Skipped)." if data.problems else "")
            + (" Made outside the lock (constraints/lock-cpu.txt), so used only where no locked run of the same "
               "framework version covers a configuration: " + "; ".join(f"run {r}: {d}" for r, d in
                                                                        sorted(data.off_lock.items())) + "."
               if data.off_lock else "")
            + "\n")
