"""CPU against GPU: the rows of one framework on both devices, paired by mode, dtype, op, implementation,
case and pass, and every pair whose verdict differs, with what the rows themselves say about why.

The two sides may be different versions of the framework (a CUDA build is not the CPU build) and come from
different machines; the section says so with the versions found, since a verdict that moved may have moved
with the version, not the device. Used by `python -m suite report` (its "CPU vs GPU" section).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEY = ["backend", "mode", "dtype", "op", "impl", "case", "pass"]
SIDES = ("cpu", "gpu")
FACTOR = 2.0  # an error this many times larger on one device is counted (errors below 1 ULP count as 1)
_ORDER = {"dtype": ("float16", "bfloat16", "float32", "float64"), "pass": ("forward", "backward"),
          "backend": ("numpy", "torch", "tensorflow", "jax")}
_CRASHES = ("error", "unsupported", "mutates_input", "changes_settings")


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _n(v) -> int:
    f = _num(v)
    return 0 if np.isnan(f) else int(f)


def mechanism(r: pd.Series) -> str:
    """What the pair's own columns show: a failure's message, non-finite values on one device only,
    subnormal results flushed on one device only, or the same formula run by different kernels."""
    for side in SIDES:
        if r[f"verdict {side}"] in _CRASHES:
            return f"{side.upper()} {r[f'verdict {side}']}: {r[f'message {side}']}"
    fc, fg = _n(r.get("n_flushed cpu")), _n(r.get("n_flushed gpu"))
    flushed = (f"flush-to-zero: {fg} subnormal results flushed to 0 on the GPU, {fc} on the CPU" if fc != fg
               else "")
    nc, ng = _n(r.get("n_nonfinite cpu")), _n(r.get("n_nonfinite gpu"))
    if nc != ng:
        more, less, n, m = ("GPU", "CPU", ng, nc) if ng > nc else ("CPU", "GPU", nc, ng)
        text = (f"different kernels: {n} NaN/inf on the {more} where the exact value is finite "
                f"({m} on the {less})")
        return "; ".join(t for t in (flushed, text) if t)
    if flushed:
        return flushed
    ec, eg = _num(r.get("ulp_err_scaled cpu")), _num(r.get("ulp_err_scaled gpu"))
    bound = _num(r.get("ulp_bound gpu"))
    return (f"different kernels (reduction order, exp/log): graded error {ec:.3g} on the CPU, {eg:.3g} on the GPU"
            + (f" (bound {bound:g})" if not np.isnan(bound) else ""))


def pair(acc: pd.DataFrame) -> pd.DataFrame:
    """CPU rows beside the GPU rows of the same framework, mode and configuration (inner join)."""
    if acc.empty or not set(SIDES) <= set(acc.device.astype(str)):
        return pd.DataFrame()
    acc = acc.assign(**{c: acc[c].astype(str) for c in KEY})
    cpu, gpu = (acc[acc.device.astype(str) == d] for d in SIDES)
    return cpu.merge(gpu, on=KEY, suffixes=(" cpu", " gpu"))


def _sorted(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    def key(s: pd.Series) -> pd.Series:
        order = _ORDER.get(str(s.name))
        return s.map({v: i for i, v in enumerate(order)}).fillna(len(order)) if order else s
    return df.sort_values(cols, key=key).reset_index(drop=True)


def cpu_vs_gpu(acc: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts per framework x mode x dtype x pass, every pair whose verdict differs with its mechanism)."""
    j = pair(acc)
    if j.empty:
        return pd.DataFrame(), pd.DataFrame()
    ec = np.maximum(j["ulp_err_scaled cpu"].astype(float), 1.0)
    eg = np.maximum(j["ulp_err_scaled gpu"].astype(float), 1.0)
    ok_c, ok_g = j["verdict cpu"] == "ok", j["verdict gpu"] == "ok"
    j = j.assign(differs=j["verdict cpu"] != j["verdict gpu"], ok_cpu_only=ok_c & ~ok_g, ok_gpu_only=ok_g & ~ok_c,
                 grew=eg > FACTOR * ec, shrank=ec > FACTOR * eg)
    g = j.groupby(["backend", "backend_version cpu", "backend_version gpu", "mode", "dtype", "pass"])
    summ = pd.DataFrame({"rows paired": g.size(), "verdict differs": g.differs.sum(),
                         "ok on CPU only": g.ok_cpu_only.sum(), "ok on GPU only": g.ok_gpu_only.sum(),
                         f"error > x{FACTOR:g} on GPU": g.grew.sum(), f"error > x{FACTOR:g} on CPU": g.shrank.sum()})
    summ = _sorted(summ.reset_index().rename(columns={"backend_version cpu": "CPU version",
                                                      "backend_version gpu": "GPU version"}),
                   ["backend", "mode", "dtype", "pass"])
    diff = j[j.differs]
    if diff.empty:
        return summ, pd.DataFrame({"rows that differ": ["none: every paired row has the same verdict"]})
    diff = diff.assign(mechanism=diff.apply(mechanism, axis=1))
    cols = [*KEY, "verdict cpu", "verdict gpu", "ulp_err_scaled cpu", "ulp_err_scaled gpu", "mechanism"]
    return summ, _sorted(diff[cols], ["backend", "mode", "dtype", "pass", "op", "impl", "case"])


def unpaired(acc: pd.DataFrame) -> list[str]:
    """What has no counterpart on the other device: frameworks run on one device only, modes run on one."""
    if acc.empty:
        return []
    have = acc.groupby(["backend", "mode"])["device"].agg(lambda d: set(d.astype(str)))
    out = []
    for (backend, mode), devs in have.items():
        if len(devs & set(SIDES)) == 1:
            out.append(f"{backend} {mode} on {next(iter(devs & set(SIDES))).upper()} only")
    return out


def versions_note(acc: pd.DataFrame) -> str:
    """'torch 2.13.0+cpu (CPU) vs 2.11.0+cu130 (GPU)' for each framework on both devices."""
    parts = []
    for backend, g in acc.groupby("backend"):
        v = {d: sorted(g[g.device.astype(str) == d].backend_version.astype(str).unique()) for d in SIDES}
        if v["cpu"] and v["gpu"]:
            same = v["cpu"] == v["gpu"]
            parts.append(f"{backend} {', '.join(v['cpu'])} on both" if same else
                         f"{backend} {', '.join(v['cpu'])} (CPU) vs {', '.join(v['gpu'])} (GPU)")
    return "; ".join(parts)


def gpu_sources(envs: dict[str, dict], frames: list[pd.DataFrame]) -> str:
    """'accuracy: NVIDIA H200 (runs a, b); timing: NVIDIA H100 80GB HBM3 (run c)': the machines the GPU rows
    in the report's tables come from, as each run's env.json records its devices."""
    parts = []
    for table, df in zip(("accuracy", "timing"), frames, strict=True):
        if df.empty or "device" not in df:
            continue
        runs = sorted(df[df.device.astype(str) == "gpu"].run_id.astype(str).unique())
        if not runs:
            continue
        names = sorted({str(n) for r in runs for k, n in ((envs.get(r) or {}).get(table, {}).get("devices") or {})
                        .items() if str(k).endswith("/gpu")}) or ["a GPU its env.json does not name"]
        parts.append(f"{table} on {', '.join(names)} (run{'s' if len(runs) > 1 else ''} {', '.join(runs)})")
    return "; ".join(parts)


NOTE = ("Each framework's newest version on the CPU against its newest on the GPU, in the same mode, paired by "
        "dtype, op, implementation, case and pass. Listed: every pair whose verdict differs, with the mechanism "
        "its rows show (a failure's message; NaN/inf on one device only; subnormal results flushed to zero on "
        "one device only; otherwise the same code run by different kernels, whose reduction order and exp/log "
        "differ). None of these ops is a matrix product, so TF32 (applied to matmul and convolution only) is "
        "not a cause. Not comparable: {versions}: a verdict that moved may have moved with the version "
        "rather than the device; the two sides also ran on different machines (the GPU rows: {sources}). "
        "No counterpart: {alone}.")


def section(acc: pd.DataFrame, envs: dict[str, dict] | None = None):
    """The report's "CPU vs GPU" section (suite.report.Section)."""
    from suite.report import Section

    summ, diff = cpu_vs_gpu(acc)
    note = NOTE.format(versions=versions_note(acc) or "no framework has rows on both devices",
                       sources=gpu_sources(envs or {}, [acc, pd.DataFrame()]) or "none",
                       alone=", ".join(unpaired(acc)) or "none")
    return Section("CPU vs GPU", note, {"summary": (summ, False), "rows that differ": (diff, False)})
