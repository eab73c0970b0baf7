"""`python -m suite compare BASE NEW`: did an upgrade break stability, accuracy or speed?

Accuracy results are deterministic for a given build, so any change is real; what counts as a
regression is a worse verdict (`ok` -> `inaccurate` -> `nonfinite` -> `error`/`unsupported`) or a
graded ULP error that grew by more than `ulp_factor` (errors below 1 ULP count as 1, so noise in the
last bit is not flagged). Timings are noisy, so a speed change counts only when the recorded samples
differ by a Mann-Whitney U test (as airspeed velocity does) *and* the median moved by more than
`min_effect`: a significant 2% change is not a regression, nor is a 30% change within the noise.
When a selector matches several timing runs of a configuration their samples are pooled (accuracy:
the latest run counts).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from suite.selection import UsageError
from suite.store import atomic_write

VERDICT_RANK = {"ok": 0, "inaccurate": 1, "nonfinite": 2, "wrong_special": 2, "error": 3, "unsupported": 3}
ACC_KEY = ["device", "dtype", "op", "impl", "case", "pass"]
SPEED_KEY = ["device", "dtype", "op", "impl", "pass", "batch", "vocab"]
MAX_LISTED = 60  # rows per Markdown table; the CSV beside it has them all


@dataclass(frozen=True)
class Thresholds:
    ulp_factor: float = 2.0
    min_effect: float = 0.10
    alpha: float = 0.01

    def check(self) -> None:
        if not self.ulp_factor > 1:
            raise UsageError(f"--ulp-factor must be > 1, got {self.ulp_factor}")
        if not 0 <= self.min_effect < 10:
            raise UsageError(f"--min-effect must be in [0, 10), got {self.min_effect}")
        if not 0 < self.alpha < 1:
            raise UsageError(f"--alpha must be in (0, 1), got {self.alpha}")


@dataclass
class Side:
    """The rows one selector picked: the latest run's row for every key."""

    selector: str
    accuracy: pd.DataFrame
    timing: pd.DataFrame

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
    return df.sort_values("run_id").drop_duplicates(["backend", *key], keep="last").reset_index(drop=True)


def pool_timings(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration with the samples of every run that timed it pooled (and the median
    recomputed from them). Timing one version in several runs interleaved with the other (A B A B)
    puts the machine's drift between runs into both sides' samples instead of into the difference."""
    if df.empty:
        return df
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
    return last.reset_index()


def resolve(tables: dict[str, pd.DataFrame], selector: str) -> Side:
    """`backend==version`, or run ids (unique prefixes are enough), comma-separated -> that side's rows."""
    acc, tim = tables["accuracy"], tables["timing"]
    ids = sorted({*acc.get("run_id", []), *tim.get("run_id", [])})
    m = re.fullmatch(r"\s*([A-Za-z0-9_]+)\s*==\s*(\S+)\s*", selector)
    if m:
        pick = {t: df[(df.backend == m[1]) & (df.backend_version.astype(str) == m[2])] for t, df in tables.items()}
    else:  # run ids or unique prefixes, comma-separated (several runs of one version pool their timings)
        hits = []
        for part in [p.strip() for p in selector.split(",") if p.strip()]:
            found = [i for i in ids if i == part] or [i for i in ids if i.startswith(part)]
            if len(found) > 1:
                raise UsageError(f"run id prefix {part!r} is ambiguous: {', '.join(found)}")
            hits += found
        pick = {t: df[df.run_id.isin(hits)] for t, df in tables.items()}
    if all(df.empty for df in pick.values()):
        versions = sorted({f"{b}=={v}" for df in tables.values() for b, v in
                           zip(df.get("backend", []), df.get("backend_version", []), strict=True)})
        raise UsageError(f"{selector!r} matches nothing in the store; valid selectors: "
                         f"{', '.join(versions) or '(store is empty)'}; or a run id: {', '.join(ids[-10:])}")
    return Side(selector, latest(pick["accuracy"], ACC_KEY), pool_timings(pick["timing"]))


@dataclass
class Result:
    accuracy: pd.DataFrame  # one row per key present on both sides, with a `change` column
    speed: pd.DataFrame
    only_base: dict[str, int] = field(default_factory=dict)
    only_new: dict[str, int] = field(default_factory=dict)
    base: str = ""
    new: str = ""

    @property
    def regressions(self) -> int:
        return int(self.accuracy.change.str.startswith("regression").sum()
                   + self.speed.change.str.startswith("regression").sum())


def _key(base: Side, new: Side, key: list[str]) -> list[str]:
    """Same frameworks on both sides: match per backend. One framework each (jax vs torch, or two
    versions of one): match without it."""
    if base.backends == new.backends:
        return ["backend", *key]
    if len(base.backends) == 1 and len(new.backends) == 1:
        return key
    raise UsageError(f"cannot match {base.selector!r} ({', '.join(base.backends)}) with {new.selector!r} "
                     f"({', '.join(new.backends)}): select the same frameworks on both sides, or one each")


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


def speed_change(samples_base, samples_new, th: Thresholds, runs_base=(), runs_new=()) -> tuple[str, float, float]:
    """(change, ratio of medians new/base, p-value of the two-sided Mann-Whitney U test).

    Rounds within one run are not independent (a noisy machine's slow spells outlast a round), so on
    their own they understate run-to-run drift. When both sides were timed in at least two runs
    (`runs_*`: each run's median), a change must also hold for every pair of runs: every new run
    slower than every base run (or faster, for an improvement)."""
    from scipy.stats import mannwhitneyu

    sb, sn = np.asarray(samples_base, dtype=float), np.asarray(samples_new, dtype=float)
    if sb.size < 2 or sn.size < 2:
        return "too few samples", np.nan, np.nan
    ratio = float(np.median(sn) / np.median(sb))
    p = float(mannwhitneyu(sn, sb, alternative="two-sided").pvalue)
    replicated = len(runs_base) >= 2 and len(runs_new) >= 2
    if p < th.alpha and ratio > 1 + th.min_effect:
        if replicated and min(runs_new) <= max(runs_base):
            return "same (runs disagree)", ratio, p
        return f"regression: {ratio:.2f}x time", ratio, p
    if p < th.alpha and ratio < 1 / (1 + th.min_effect):
        if replicated and max(runs_new) >= min(runs_base):
            return "same (runs disagree)", ratio, p
        return f"improvement: {1 / ratio:.2f}x faster", ratio, p
    return ("same" if p >= th.alpha else "same (change below min effect)"), ratio, p


def compare(base: Side, new: Side, th: Thresholds) -> Result:
    result = Result(pd.DataFrame(), pd.DataFrame(), base=base.describe(), new=new.describe())
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
        judged = [speed_change(b, n, th, rb, rn) for b, n, rb, rn in
                  zip(sp.samples_base, sp.samples_new, sp.run_medians_base, sp.run_medians_new, strict=True)]
        sp["change"] = [c for c, _, _ in judged]
        sp["time_ratio"] = [r for _, r, _ in judged]
        sp["p_value"] = [p for _, _, p in judged]
    else:
        sp = pd.DataFrame(columns=["change"])
    result.accuracy, result.speed = acc, sp
    return result


def default_report_path(root: Path, base: str, new: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{base}_vs_{new}")
    return Path(root) / "comparisons" / f"{safe}.md"


def _kind(change: pd.Series) -> pd.Series:
    return change.str.split(":").str[0].replace({"same (change below min effect)": "same",
                                                 "same (runs disagree)": "same"})


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
                     "improvements": int(counts.get("improvement", 0)), "same": int(counts.get("same", 0)),
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


def _replication(result: Result) -> str:
    sp = result.speed
    if sp.empty or "n_runs_base" not in sp:
        return ""
    nb, nn = int(sp.n_runs_base.min()), int(sp.n_runs_new.min())
    line = f"- timing runs per configuration: base {nb}, new {nn}\n"
    if min(nb, nn) >= 2:
        chance = 1 / math.comb(nb + nn, nb)
        line += (f"- if runs of either version were interchangeable (drift only), every new run would land above "
                 f"every base run by chance with probability {chance:.3g} per configuration and direction; "
                 "that, not the sample test's p, bounds the false alarms on a machine that drifts\n")
    else:
        line += ("- **warning**: with one run per side, drift between runs is not measured; on a noisy "
                 "machine time each version in two or more runs, interleaved (A B B A), and compare again\n")
    return line


def render_markdown(result: Result, base: str, new: str, th: Thresholds) -> str:
    acc_cols = [c for c in ("backend", *ACC_KEY) if c in result.accuracy.columns] + [
        "verdict_base", "verdict_new", "ulp_err_scaled_base", "ulp_err_scaled_new", "change"]
    sp_cols = [c for c in ("backend", *SPEED_KEY) if c in result.speed.columns] + [
        "n_runs_base", "n_runs_new", "median_s_base", "median_s_new", "time_ratio", "p_value", "change"]
    groups = by_group(result)
    parts = [
        f"# Comparison: `{base}` -> `{new}`\n",
        f"- base: {result.base}\n- new: {result.new}\n",
        f"- accuracy regression: a worse verdict, or graded ULP error grown by more than x{th.ulp_factor:g} "
        f"(errors below 1 ULP count as 1)\n- speed regression: Mann-Whitney U p < {th.alpha:g} on the timing "
        f"samples (pooled over runs) and median time up by more than {th.min_effect:.0%}; with two or more "
        f"runs per side, also every new run slower than every base run\n{_replication(result)}",
        "## Summary\n", summary_table(result).to_markdown(index=False) + "\n",
        "## Accuracy changes by op, implementation, pass and dtype\n",
        (groups.to_markdown(index=False) + "\n") if len(groups) else "none\n",
        "## Accuracy regressions\n", _listing(result.accuracy, acc_cols, "regression"),
        "## Accuracy improvements\n", _listing(result.accuracy, acc_cols, "improvement"),
        "## Speed regressions\n", _listing(result.speed, sp_cols, "regression"),
        "## Speed improvements\n", _listing(result.speed, sp_cols, "improvement"),
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
                           "time_ratio", "p_value", "gbps_base", "gbps_new", "change") if c in sp.columns]
    path = md_path.with_suffix(".csv")
    table = pd.concat([acc[acc_cols].assign(table="accuracy"), sp[sp_cols].assign(table="speed")],
                      ignore_index=True)
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return path
