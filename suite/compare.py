"""`python -m suite compare BASE NEW`: did an upgrade break stability, accuracy or speed?

Accuracy results are deterministic for a given build, so any change is real; what counts as a
regression is a worse verdict (`ok` -> `inaccurate` -> `nonfinite` -> `error`/`unsupported`) or a
graded ULP error that grew by more than `ulp_factor` (errors below 1 ULP count as 1, so noise in the
last bit is not flagged). Speed is judged on run-level statistics: rounds inside one process share
its slow spells, so the unit of replication is a run (`python -m suite ab` makes them, interleaved).
Per configuration, the ratio of the medians of the per-run times (each run's fastest round, or its
median) gets an exact permutation interval; a change must be both confident and larger than
`min_effect`, a confident absence of a larger change is `no change`, and anything else is
`inconclusive` (too few runs, or too much run-to-run noise), which is reported but does not fail.
Accuracy: the latest run counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from suite.modes import fill_mode
from suite.results import ROW_PACKAGES, recorded_packages
from suite.selection import UsageError, listed
from suite.store import atomic_write

VERDICT_RANK = {"ok": 0, "inaccurate": 1, "nonfinite": 2, "wrong_special": 2, "mutates_input": 2,
                "changes_settings": 2, "error": 3, "unsupported": 3}
ACC_KEY = ["device", "mode", "dtype", "op", "impl", "case", "pass"]  # rows pair within a mode (suite.modes)
SPEED_KEY = ["device", "mode", "dtype", "op", "impl", "pass", "batch", "vocab"]
RUN_STATISTICS = {"median": "median_s", "min": "min_s"}  # per-run statistic -> timing column
MAX_LISTED = 60  # rows per Markdown table; the CSV beside it has them all


@dataclass(frozen=True)
class Thresholds:
    ulp_factor: float = 2.0
    min_effect: float = 0.10
    # per configuration and both directions: ~1 false alarm expected over a 252-configuration sweep (1/252 =
    # 0.004), which the exact test on 6 + 6 runs can meet (it flags at most 2/924 per direction)
    alpha: float = 0.005
    unstable: float = 0.10  # a run whose copy bandwidth moved by more than this during the run is unstable
    statistic: str = "min"  # of each run's rounds: "min" (interference only ever adds time) or "median"

    def check(self) -> None:
        if not self.ulp_factor > 1:
            raise UsageError(f"--ulp-factor must be > 1, got {self.ulp_factor}")
        if not 0 <= self.min_effect < 10:
            raise UsageError(f"--min-effect must be in [0, 10), got {self.min_effect}")
        if not 0 < self.alpha < 1:
            raise UsageError(f"--alpha must be in (0, 1), got {self.alpha}")
        if self.statistic not in RUN_STATISTICS:
            raise UsageError(f"--statistic must be one of {', '.join(RUN_STATISTICS)}, got {self.statistic!r}")


@dataclass
class Side:
    """The rows one selector picked: the latest run's row for every key."""

    selector: str
    accuracy: pd.DataFrame
    timing: pd.DataFrame  # pooled: one row per configuration, with every run's median and min (run_medians, run_mins)
    raw_timing: pd.DataFrame = field(default_factory=pd.DataFrame)  # every run's rows
    # run id -> the package versions its env.json records (None: not recorded, an env.json from before they
    # were), and what it says of them at all (older ones: numpy, pandas, the frameworks); empty: not read
    packages: dict[str, dict | None] = field(default_factory=dict)
    known: dict[str, dict] = field(default_factory=dict)
    # the frameworks the selected runs recorded (env.json), present or not: a partition left out as damaged or
    # missing must not turn "the same frameworks" into "one each" and pair different frameworks
    intended: list[str] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        ids = [*self.accuracy.get("run_id", []), *self.timing.get("run_id", [])]
        return sorted({r for x in ids for r in str(x).split(",")})

    @property
    def backends(self) -> list[str]:
        return sorted(set(self.accuracy.get("backend", [])) | set(self.timing.get("backend", [])))

    def describe(self) -> str:
        both = pd.concat([self.accuracy[["backend", "backend_version", "run_id"]],
                          self.timing[["backend", "backend_version", "run_id"]]])
        vers = ", ".join(f"{b} {v}" for b, v in both.groupby(["backend", "backend_version"]).size().index)
        runs = sorted({r for ids in both.run_id.astype(str) for r in ids.split(",")})
        return f"{vers} (runs {', '.join(runs)})"


def latest(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """The latest run's row for every (backend, *key)."""
    if df.empty:
        return df
    df = fill_mode(df) if "mode" in key else df
    return df.sort_values("run_id").drop_duplicates(["backend", *key], keep="last").reset_index(drop=True)


def pool_timings(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration with the samples of every run that timed it pooled (and the median
    recomputed from them). Timing one version in several runs interleaved with the other (A B A B)
    puts the machine's drift between runs into both sides' samples instead of into the difference."""
    if df.empty:
        return df
    df = fill_mode(df)
    key = ["backend", *SPEED_KEY]
    df = df.sort_values("run_id")
    last = df.drop_duplicates(key, keep="last").set_index(key)
    grouped = df.groupby(key, sort=False)
    pooled = grouped.samples.agg(lambda s: [float(x) for arr in s for x in np.asarray(arr, dtype=float)])
    last["samples"] = pooled
    last["median_s"] = [float(np.median(s)) if len(s) else np.nan for s in last.samples]
    last["run_id"] = grouped.run_id.agg(lambda r: ",".join(sorted(set(r))))
    last["n_runs"] = grouped.run_id.nunique()
    last["run_medians"] = grouped.median_s.agg(list)
    last["run_mins"] = grouped.min_s.agg(list) if "min_s" in df else last["run_medians"]
    return last.reset_index()


def run_packages(runs: dict[str, dict], run_id: str) -> dict[str, str] | None:
    """The package versions the env.json of `run_id` records (any of its tables), None if none does."""
    for env in runs.get(str(run_id), {}).values():
        rec = recorded_packages(env)
        if rec is not None:
            return rec
    return None


def known_packages(runs: dict[str, dict], run_id: str) -> dict[str, str]:
    """What a run's env.json says of package versions: all of them where recorded, else what older env.json
    files hold (numpy, pandas and the frameworks' versions)."""
    out: dict[str, str] = {}
    for env in runs.get(str(run_id), {}).values():
        if not isinstance(env, dict):
            continue
        for name in ("numpy", "pandas"):
            if isinstance(env.get(name), str):
                out.setdefault(name, env[name])
        for name, version in (env.get("frameworks") or {}).items():  # under the framework's name (tensorflow,
            out.setdefault(name, str(version))  # whichever of tensorflow / tensorflow-cpu installed it)
    return {**out, **(run_packages(runs, run_id) or {})}


def recorded_backends(runs: dict[str, dict], run_id: str) -> set[str]:
    """The frameworks a run's env.json files say it wrote: its `partitions`, else the backends of its
    `devices` (backend/device), else its `frameworks`; empty when it has no env.json."""
    out: set[str] = set()
    for env in runs.get(str(run_id), {}).values():
        if not isinstance(env, dict):
            continue
        if isinstance(env.get("partitions"), dict):
            out |= {k.split("/", 1)[0].removeprefix("backend=") for k in env["partitions"]}
        elif isinstance(env.get("devices"), dict) and env["devices"]:
            out |= {k.split("/", 1)[0] for k in env["devices"]}
        elif isinstance(env.get("frameworks"), dict):
            out |= set(env["frameworks"])
    return out


def _version_matches(recorded: str, wanted: str) -> bool:
    """PEP 440 `==`: `torch==2.13.0` matches the local build 2.13.0+cpu; other strings compare as text."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(f"=={wanted}").contains(recorded, prereleases=True)
    except (InvalidSpecifier, ValueError):
        return recorded == wanted


def package_runs(runs: dict[str, dict], ids, name: str, version: str) -> list[str]:
    """The run ids among `ids` whose env.json records package `name` at `version`."""
    from packaging.utils import canonicalize_name

    key = canonicalize_name(name)
    return [i for i in ids if (v := known_packages(runs, i).get(key)) is not None and _version_matches(v, version)]


def resolve(tables: dict[str, pd.DataFrame], selector: str, runs: dict[str, dict] | None = None,
            left_out: dict[str, set[str]] | None = None) -> Side:
    """`backend==version`, `package==version` (every run whose env.json records that version of the package,
    e.g. ml_dtypes==0.6.0; needs `runs`, the store's Store.runs()), `<protocol id>:<arm>` (one side of `suite
    ab`), or run ids (unique prefixes are enough), comma-separated -> that side's rows. A framework's name
    selects that framework's rows at that version; any other package's name selects whole runs."""
    acc, tim = tables["accuracy"], tables["timing"]
    ids = sorted({*acc.get("run_id", []), *tim.get("run_id", [])})
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*==\s*(\S+)\s*", selector)
    arm = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*):([A-Za-z0-9]+)\s*", selector)
    backends = {*acc.get("backend", []), *tim.get("backend", [])}
    if m and m[1] in backends:
        pick = {t: df[(df.backend == m[1]) & (df.backend_version.astype(str) == m[2])] for t, df in tables.items()}
    elif m:  # any other package: the runs whose env.json records that version
        hits = package_runs(runs or {}, ids, m[1], m[2])
        pick = {t: df[df.run_id.isin(hits)] for t, df in tables.items()}
    elif arm:  # one side of a `python -m suite ab` protocol: every run <protocol>-<arm>-<k>
        pick = {t: df[df.run_id.astype(str).str.startswith(f"{arm[1]}-{arm[2]}-")] for t, df in tables.items()}
    else:  # run ids or unique prefixes, comma-separated (several runs of one version pool their timings)
        hits = []
        for part in [p.strip() for p in selector.split(",") if p.strip()]:
            found = [i for i in ids if i == part] or [i for i in ids if i.startswith(part)]
            if len(found) > 1:
                raise UsageError(f"run id prefix {part!r} is ambiguous: {listed(found)}")
            hits += found
        pick = {t: df[df.run_id.isin(hits)] for t, df in tables.items()}
    if all(df.empty for df in pick.values()):
        versions = sorted({f"{b}=={v}" for df in tables.values() for b, v in
                           zip(df.get("backend", []), df.get("backend_version", []), strict=True)})
        packages = "; or a package version the runs' env.json record, e.g. ml_dtypes==0.6.0" if runs is not None \
            else ""
        raise UsageError(f"{selector!r} matches nothing in the store; valid selectors: "
                         f"{', '.join(versions) or '(store is empty)'}; or a run id: {', '.join(ids[-10:])}"
                         f"{packages}")
    out = side(selector, pick["accuracy"], pick["timing"], runs)
    if m and m[1] in backends:
        out.intended = [m[1]]
    else:  # whole runs: the frameworks each recorded, or (no env.json) the ones it has rows of, and the
        # frameworks of its files the store left out (`left_out`: Store.left_out)
        out.intended = sorted({b for r in out.run_ids for b in (recorded_backends(runs or {}, r) or {
            str(x) for df in pick.values() for x in df.loc[df.run_id.astype(str) == r, "backend"]})
            | (left_out or {}).get(r, set())})
    return out


def side(selector: str, accuracy: pd.DataFrame, timing: pd.DataFrame, runs: dict[str, dict] | None = None) -> Side:
    out = Side(selector, latest(accuracy, ACC_KEY), pool_timings(timing), timing)
    if runs is not None:
        out.packages = {r: run_packages(runs, r) for r in out.run_ids}
        out.known = {r: known_packages(runs, r) for r in out.run_ids}
    return out


def _versions_of(side: Side, name: str) -> str:
    """'0.6.0', '0.6.0, 0.7.0', 'not recorded' (an env.json without packages), 'not installed'."""
    vals = sorted({k[name] for k in side.known.values() if name in k})
    missing = {"not installed" if side.packages.get(r) is not None else "not recorded"
               for r, k in side.known.items() if name not in k}
    return ", ".join(vals + sorted(missing))


def package_diff(base: Side, new: Side) -> pd.DataFrame:
    """package | base | new: every package whose recorded version differs between the sides' runs (several
    versions on one side are listed together), and the row-changing packages (ROW_PACKAGES) that one side's
    runs do not record ("not recorded") while the other's do."""
    from packaging.utils import canonicalize_name

    cols = ["package", "base", "new"]
    if not base.known and not new.known:
        return pd.DataFrame(columns=cols)
    names = sorted({n for side in (base, new) for k in side.known.values() for n in k})
    row_changing = {canonicalize_name(n) for n in ROW_PACKAGES}
    rows = []
    for name in names:
        b, n = _versions_of(base, name), _versions_of(new, name)
        if b == n:
            continue
        bv, nv = ({v for v in x.split(", ") if v not in ("not recorded", "not installed")} for x in (b, n))
        if name not in row_changing and (not bv or not nv or bv == nv):
            continue  # a package that cannot change a row, only missing on one side (e.g. the test tools)
        rows.append({"package": name, "base": b, "new": n})
    return pd.DataFrame(rows, columns=cols)


def packages_markdown(base: Side, new: Side) -> str:
    if not base.known and not new.known:
        return "not recorded (the runs' env.json were not read)\n"
    diff = package_diff(base, new)
    lines = []
    for label, side in (("base", base), ("new", new)):
        old = sorted(r for r, p in side.packages.items() if p is None)
        if old:
            lines.append(f"- {label}: run(s) {', '.join(old)} record no package versions (env.json written before "
                         "they were): only numpy, pandas and the frameworks are known, the rest is `not recorded`")
    table = diff.to_markdown(index=False) if len(diff) else "none: every recorded package version is the same"
    return ("\n".join(lines) + "\n\n" if lines else "") + table + "\n"


@dataclass
class Result:
    accuracy: pd.DataFrame  # one row per key present on both sides, with a `change` column
    speed: pd.DataFrame
    only_base: dict[str, int] = field(default_factory=dict)
    only_new: dict[str, int] = field(default_factory=dict)
    base: str = ""
    new: str = ""
    stability: pd.DataFrame = field(default_factory=pd.DataFrame)  # per timing run of either side
    packages: str = ""  # Markdown: the package versions that differ between the sides' runs

    @property
    def regressions(self) -> int:
        return int(self.accuracy.change.str.startswith("regression").sum()
                   + self.speed.change.str.startswith("regression").sum())


def _key(base: Side, new: Side, key: list[str]) -> list[str]:
    """Same frameworks on both sides: match per backend. One framework each (jax vs torch, or two
    versions of one): match without it."""
    modes = [set(side.accuracy.get("mode", [])) | set(side.timing.get("mode", [])) for side in (base, new)]
    if all(len(m) == 1 for m in modes) and modes[0] != modes[1]:  # e.g. jax (compiled) vs torch (eager)
        key = [k for k in key if k != "mode"]
    intended = [set(side.intended or side.backends) for side in (base, new)]
    if base.backends == new.backends or intended[0] == intended[1]:  # a side short of a framework it recorded
        return ["backend", *key]  # (a damaged or missing partition, reported as skipped) only has fewer rows
    if len(intended[0]) == 1 and len(intended[1]) == 1:
        return key
    raise UsageError(f"cannot match {base.selector!r} ({', '.join(sorted(intended[0]))}) with {new.selector!r} "
                     f"({', '.join(sorted(intended[1]))}): select the same frameworks on both sides, or one each")


def _join(b: pd.DataFrame, n: pd.DataFrame, key: list[str], name: str, result: Result) -> pd.DataFrame:
    if b.empty or n.empty:
        result.only_base[name], result.only_new[name] = len(b), len(n)
        return pd.DataFrame()
    j = b.merge(n, on=key, how="outer", suffixes=("_base", "_new"), indicator=True)
    result.only_base[name] = int((j._merge == "left_only").sum())
    result.only_new[name] = int((j._merge == "right_only").sum())
    return j[j._merge == "both"].drop(columns="_merge").reset_index(drop=True)


def accuracy_change(vb: str, vn: str, eb: float, en: float, factor: float) -> str:
    rb, rn = VERDICT_RANK.get(vb, 3), VERDICT_RANK.get(vn, 3)
    if rn > rb:
        return f"regression: {vb} -> {vn}"
    if rn < rb:
        return f"improvement: {vb} -> {vn}"
    if np.isfinite(eb) and np.isfinite(en):
        growth = max(en, 1.0) / max(eb, 1.0)
        if growth > factor:
            return f"regression: ULP x{growth:.3g}"
        if growth < 1 / factor:
            return f"improvement: ULP /{1 / growth:.3g}"
    return "same"


# --- speed: decided on run-level statistics --------------------------------------------------------

def u_null_cdf(m: int, n: int) -> np.ndarray:
    """P(U <= u), u = 0 .. m*n, of the Mann-Whitney U statistic when all C(m+n, m) orderings of m + n
    runs are equally likely (no ties): the exact permutation distribution."""
    counts = np.zeros((m + 1, n + 1, m * n + 1))
    counts[0, :, 0] = counts[:, 0, 0] = 1
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            counts[i, j, j:] += counts[i - 1, j, :m * n + 1 - j]  # the largest run is one of the m: it beats all n
            counts[i, j] += counts[i, j - 1]
    return np.cumsum(counts[m, n]) / math.comb(m + n, m)


def interval_rank(m: int, n: int, alpha: float) -> int | None:
    """The largest k with P(U <= k-1) <= alpha/2: the k-th smallest and largest of the m*n pairwise
    log ratios bound an exact (1 - alpha) interval (Moses' interval, the inversion of the permutation
    test). None when even complete separation of the runs is not significant at alpha (too few runs)."""
    if m < 1 or n < 1:
        return None
    cdf = u_null_cdf(m, n)
    ok = np.nonzero(cdf <= alpha / 2)[0]
    return int(ok[-1]) + 1 if len(ok) else None


def min_runs(alpha: float) -> int:
    """Fewest runs per side (equal sides) for which the exact test at alpha can decide at all."""
    return next((k for k in range(1, 40) if interval_rank(k, k, alpha) is not None), 40)


@dataclass(frozen=True)
class SpeedDecision:
    change: str  # "regression: ...", "improvement: ...", "no change", "inconclusive: <why>"
    ratio: float  # median over the new runs / median over the base runs (of each run's min or median time)
    low: float  # exact (1 - alpha) interval on the time ratio (from the runs' pairwise ratios)
    high: float
    noise: float  # run-to-run spread: pooled standard deviation of log run times, as a fraction
    p_value: float  # exact two-sided Mann-Whitney U test on the run times


def run_noise(runs_base, runs_new) -> float:
    """Pooled standard deviation of the log run times within each side (exp(s) - 1): the noise floor
    of a configuration, what two runs of one build differ by."""
    logs = [np.log(np.asarray(r, dtype=float)) for r in (runs_base, runs_new)]
    dof = sum(len(x) - 1 for x in logs)
    if dof < 1:
        return math.nan
    return float(np.expm1(math.sqrt(sum(((x - x.mean()) ** 2).sum() for x in logs) / dof)))


def speed_decision(runs_base, runs_new, th: Thresholds) -> SpeedDecision:
    """Judge one configuration from one time per run (each run a fresh process).

    regression: the exact interval on the time ratio lies above 1 and the ratio of medians is above
    1 + min_effect (improvement: the mirror image); no change: the interval lies within the
    +-min_effect band; inconclusive: too few runs for the test to decide at alpha, or an interval too
    wide for either (the configuration's run-to-run noise is reported with it)."""
    from scipy.stats import mannwhitneyu

    rb, rn = np.asarray(runs_base, dtype=float), np.asarray(runs_new, dtype=float)
    rb, rn = rb[np.isfinite(rb) & (rb > 0)], rn[np.isfinite(rn) & (rn > 0)]
    noise = run_noise(rb, rn)
    if rb.size == 0 or rn.size == 0:
        return SpeedDecision("inconclusive: no timing on one side", math.nan, math.nan, math.nan, noise, math.nan)
    ratio = float(np.median(rn) / np.median(rb))
    k = interval_rank(rb.size, rn.size, th.alpha)
    if k is None:
        need = min_runs(th.alpha)
        return SpeedDecision(f"inconclusive: too few runs ({rb.size}+{rn.size}; at alpha {th.alpha:g} the exact "
                             f"test needs {need}+{need})", ratio, math.nan, math.nan, noise, math.nan)
    pair = np.sort((np.log(rn)[None, :] - np.log(rb)[:, None]).ravel())
    low, high = float(np.exp(pair[k - 1])), float(np.exp(pair[-k]))
    p = float(mannwhitneyu(rn, rb, alternative="two-sided", method="exact").pvalue)
    band = 1 + th.min_effect
    if low > 1 and ratio > band:
        change = f"regression: {ratio:.2f}x time"
    elif high < 1 and ratio < 1 / band:
        change = f"improvement: {1 / ratio:.2f}x faster"
    elif low >= 1 / band and high <= band:
        change = "no change"
    else:
        change = (f"inconclusive: noise (interval {low:.2f}-{high:.2f}x crosses the {th.min_effect:.0%} "
                  f"threshold; run-to-run noise {noise:.1%})")
    return SpeedDecision(change, ratio, low, high, noise, p)


def run_stability(timing: pd.DataFrame, limit: float) -> pd.DataFrame:
    """Per run: the copy bandwidth measured before and after its sweep, the relative move, and whether it
    moved by more than `limit` (an unstable run: the machine changed under it). Runs stored before the
    second measurement existed have no verdict."""
    cols = ["run_id", "copy_start", "copy_end", "moved", "unstable"]
    if timing.empty or "copy_gbps_end" not in timing:
        return pd.DataFrame(columns=cols)
    g = timing.groupby("run_id").agg(copy_start=("copy_gbps", "median"), copy_end=("copy_gbps_end", "median"))
    g = g[g.copy_start.notna() & g.copy_end.notna()].reset_index()
    g["moved"] = g.copy_end / g.copy_start - 1
    g["unstable"] = g.moved.abs() > limit
    return g[cols]


def unstable_warning(stability: pd.DataFrame, limit: float) -> str:
    """pyperf-style: say that the result may be unstable, why, and what to do."""
    bad = stability[stability.unstable]
    if bad.empty:
        return ""
    lines = ["WARNING: the benchmark result may be unstable"]
    lines += [f"* run {r.run_id}: copy bandwidth moved by {r.moved:+.1%} during the run "
              f"({r.copy_start:.1f} -> {r.copy_end:.1f} GB/s; limit {limit:.0%})" for r in bad.itertuples()]
    lines.append("Other work on the machine changed its speed while these runs were timed. Rerun them on a "
                 "quieter machine, or add runs (python -m suite ab --runs N) so that one bad run weighs less.")
    return "\n".join(lines)


def compare(base: Side, new: Side, th: Thresholds) -> Result:
    result = Result(pd.DataFrame(), pd.DataFrame(), base=base.describe(), new=new.describe(),
                    packages=packages_markdown(base, new))
    acc = _join(base.accuracy, new.accuracy, _key(base, new, ACC_KEY), "accuracy", result)
    if not acc.empty:
        err = "ulp_err_scaled"
        acc["change"] = [accuracy_change(vb, vn, float(eb), float(en), th.ulp_factor) for vb, vn, eb, en in
                         zip(acc.verdict_base, acc.verdict_new, acc[f"{err}_base"], acc[f"{err}_new"], strict=True)]
    else:
        acc = pd.DataFrame(columns=["change"])
    sp = _join(base.timing[base.timing.median_s.notna()], new.timing[new.timing.median_s.notna()],
               _key(base, new, SPEED_KEY), "speed", result)
    if not sp.empty:
        col = "run_medians" if th.statistic == "median" else "run_mins"
        judged = [speed_decision(rb, rn, th) for rb, rn in zip(sp[f"{col}_base"], sp[f"{col}_new"], strict=True)]
        sp["change"] = [d.change for d in judged]
        sp["time_ratio"] = [d.ratio for d in judged]
        sp["ratio_low"] = [d.low for d in judged]
        sp["ratio_high"] = [d.high for d in judged]
        sp["noise"] = [d.noise for d in judged]
        sp["p_value"] = [d.p_value for d in judged]
    else:
        sp = pd.DataFrame(columns=["change"])
    result.stability = pd.concat([run_stability(base.raw_timing, th.unstable),
                                  run_stability(new.raw_timing, th.unstable)], ignore_index=True)
    result.accuracy, result.speed = acc, sp
    return result


def default_report_path(root: Path, base: str, new: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{base}_vs_{new}")
    if len(safe) > 120:  # many run ids per side: a name the file system takes, still telling and unique
        import hashlib

        safe = f"{safe[:100]}-{hashlib.sha256(safe.encode()).hexdigest()[:12]}"
    return Path(root) / "comparisons" / f"{safe}.md"


def _kind(change: pd.Series) -> pd.Series:
    """regression, improvement, no change (accuracy's `same` too) or inconclusive."""
    return change.str.split(":").str[0].replace({"same": "no change"})


def _listing(df: pd.DataFrame, cols: list[str], kind: str) -> str:
    sub = df[df.change.str.startswith(kind)]
    if sub.empty:
        return "none\n"
    cols = [c for c in cols if c in sub.columns]
    text = sub[cols].head(MAX_LISTED).to_markdown(index=False, floatfmt=".3g")
    more = f"\n\n... and {len(sub) - MAX_LISTED} more (all in the CSV beside this file)" \
        if len(sub) > MAX_LISTED else ""
    return text + more + "\n"


def summary_table(result: Result) -> pd.DataFrame:
    rows = []
    for name, df in (("accuracy", result.accuracy), ("speed", result.speed)):
        counts = _kind(df.change).value_counts() if len(df) else pd.Series(dtype=int)
        rows.append({"table": name, "compared": len(df), "regressions": int(counts.get("regression", 0)),
                     "improvements": int(counts.get("improvement", 0)), "no change": int(counts.get("no change", 0)),
                     "inconclusive": int(counts.get("inconclusive", 0)),
                     "only in base": result.only_base.get(name, 0), "only in new": result.only_new.get(name, 0)})
    return pd.DataFrame(rows)


def by_group(result: Result) -> pd.DataFrame:
    """Accuracy changes counted per op x impl x pass x dtype: where an upgrade moved things."""
    acc = result.accuracy
    if acc.empty:
        return pd.DataFrame()
    moved = acc[~acc.change.eq("same")]
    if moved.empty:
        return pd.DataFrame()
    t = pd.crosstab([moved.op, moved.impl, moved["pass"], moved.dtype], _kind(moved.change))
    return t.reset_index()


def noise_by_size(result: Result) -> pd.DataFrame:
    """The noise floor (run-to-run spread of the per-run times) per input size: median and worst over
    the configurations of that size, next to the outcomes there."""
    sp = result.speed
    if sp.empty or "noise" not in sp or sp.noise.isna().all():
        return pd.DataFrame()
    sp = sp.assign(kind=_kind(sp.change))
    t = sp.groupby(["batch", "vocab"]).agg(configurations=("change", "size"), noise_median=("noise", "median"),
                                           noise_worst=("noise", "max"))
    counts = pd.crosstab([sp.batch, sp.vocab], sp.kind)
    t = t.join(counts).fillna(0).reset_index()
    for c in ("noise_median", "noise_worst"):
        t[c] = [f"{x:.1%}" for x in t[c]]
    return t


def _replication(result: Result, th: Thresholds) -> str:
    sp = result.speed
    if sp.empty or "n_runs_base" not in sp:
        return ""
    nb, nn = int(sp.n_runs_base.min()), int(sp.n_runs_new.min())
    line = f"- timing runs per configuration (each a fresh process): base {nb}, new {nn}\n"
    k = interval_rank(nb, nn, th.alpha)
    if k is None:
        need = min_runs(th.alpha)
        line += (f"- **too few runs**: at alpha {th.alpha:g} the exact test on run times needs at least "
                 f"{need} runs per side, so no speed change can be confirmed; time each version in "
                 f"`python -m suite ab --runs {need}`\n")
    else:
        line += (f"- if the runs of both sides were interchangeable (no change, drift only), a configuration is "
                 f"flagged in a given direction with probability <= {u_null_cdf(nb, nn)[k - 1]:.3g}: its interval "
                 f"excludes 1 only when at most {k - 1} of the {nb * nn} base/new run pairs are out of order\n")
    return line


def render_markdown(result: Result, base: str, new: str, th: Thresholds) -> str:
    acc_cols = [c for c in ("backend", *ACC_KEY) if c in result.accuracy.columns] + [
        "verdict_base", "verdict_new", "ulp_err_scaled_base", "ulp_err_scaled_new", "change"]
    sp_cols = [c for c in ("backend", *SPEED_KEY) if c in result.speed.columns] + [
        "n_runs_base", "n_runs_new", "median_s_base", "median_s_new", "time_ratio", "ratio_low", "ratio_high",
        "noise", "change"]
    groups = by_group(result)
    noise = noise_by_size(result)
    warning = unstable_warning(result.stability, th.unstable)
    parts = [
        f"# Comparison: `{base}` -> `{new}`\n",
        f"- base: {result.base}\n- new: {result.new}\n",
        f"- accuracy regression: a worse verdict, or graded ULP error grown by more than x{th.ulp_factor:g} "
        f"(errors below 1 ULP count as 1)\n- speed, per configuration, on each timing run's {th.statistic} time "
        f"(each run a fresh process): ratio = median over the new runs / median over the base runs, with an exact "
        f"{1 - th.alpha:.1%} "
        f"interval (the permutation test's, from the runs' pairwise ratios). Regression: interval above 1 and "
        f"ratio above {1 + th.min_effect:g}; improvement: the mirror image; no change: interval within "
        f"{1 / (1 + th.min_effect):.3g}-{1 + th.min_effect:g}; inconclusive: too few runs or too much run-to-run "
        f"noise to tell (noise: pooled spread of the log run times)\n{_replication(result, th)}",
        *([f"```\n{warning}\n```\n"] if warning else []),
        "## Summary\n", summary_table(result).to_markdown(index=False) + "\n",
        "## Package versions that differ\n", result.packages or "not recorded (the runs' env.json were not read)\n",
        "## Accuracy changes by op, implementation, pass and dtype\n",
        (groups.to_markdown(index=False) + "\n") if len(groups) else "none\n",
        "## Accuracy regressions\n", _listing(result.accuracy, acc_cols, "regression"),
        "## Accuracy improvements\n", _listing(result.accuracy, acc_cols, "improvement"),
        "## Speed regressions\n", _listing(result.speed, sp_cols, "regression"),
        "## Speed improvements\n", _listing(result.speed, sp_cols, "improvement"),
        "## Speed noise floor and outcomes by input size\n",
        (noise.to_markdown(index=False) + "\n") if len(noise) else "none (fewer than two runs per side)\n",
        "## Speed inconclusive\n", _listing(result.speed, sp_cols, "inconclusive"),
    ]
    verdict = "REGRESSIONS FOUND" if result.regressions else "no regression"
    parts.append(f"**{verdict}**: {result.regressions} regression(s).\n")
    return "\n".join(parts)


def write_csv(result: Result, md_path: Path) -> Path:
    """Beside the Markdown: every accuracy row that changed and every timed configuration, with the
    columns that explain the judgement (the store has the rest)."""
    acc = result.accuracy
    if len(acc):
        acc = acc[acc.change != "same"]
    acc_cols = [c for c in ("backend", *ACC_KEY, "verdict_base", "verdict_new", "ulp_err_scaled_base",
                            "ulp_err_scaled_new", "ulp_bound_base", "message_base", "message_new", "change")
                if c in acc.columns]
    sp = result.speed
    sp_cols = [c for c in ("backend", *SPEED_KEY, "n_runs_base", "n_runs_new", "median_s_base", "median_s_new",
                           "time_ratio", "ratio_low", "ratio_high", "noise", "p_value", "gbps_base", "gbps_new",
                           "change") if c in sp.columns]
    path = md_path.with_suffix(".csv")
    table = pd.concat([acc[acc_cols].assign(table="accuracy"), sp[sp_cols].assign(table="speed")],
                      ignore_index=True)
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return path
