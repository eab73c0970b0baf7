"""`python -m suite run|list`: the accuracy matrix from the command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from suite.ops import DEVICES, IMPLS, OPS, PASSES
from suite.selection import UsageError, choose, load_case_file, select_cases, split_list


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m suite", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the accuracy matrix and write <out>/accuracy.{parquet,csv}")
    for name, what in (("backends", "frameworks"), ("dtypes", "dtypes"), ("ops", "ops"),
                       ("impls", "implementations"), ("passes", "forward/backward"),
                       ("devices", "cpu/gpu"), ("cases", "case names or tags")):
        run.add_argument(f"--{name}", action="append", metavar="A,B",
                         help=f"comma-separated {what} (default: all{' installed' if name == 'backends' else ''})")
    run.add_argument("--case-file", action="append", metavar="F.npz",
                     help="your own logits (npz: logits, optional targets, temperature)")
    _store_args(run)
    run.add_argument("--jobs", type=int, default=None, metavar="N",
                     help="worker processes, one dtype each (default: number of CPUs)")
    bench = sub.add_parser("bench", help="time every backend/device/dtype/op/impl over a size sweep")
    for name, what in (("backends", "frameworks"), ("dtypes", "dtypes"), ("ops", "ops"),
                       ("impls", "implementations"), ("passes", "forward,forward+backward"), ("devices", "cpu/gpu")):
        bench.add_argument(f"--{name}", action="append", metavar="A,B", help=f"comma-separated {what}")
    bench.add_argument("--sizes", default=None, metavar="BxV,...",
                       help="batch x vocab list, e.g. 64x131072,256x8192 (default: a sweep of 4 KiB .. 256 MiB)")
    bench.add_argument("--min-time", type=float, default=0.2, help="seconds of measured rounds (default 0.2)")
    bench.add_argument("--order", choices=("grid", "random"), default="grid",
                       help="configuration order: grid, or shuffled with --seed (default grid)")
    bench.add_argument("--seed", type=int, default=None, help="seed of --order random (recorded in env.json)")
    _store_args(bench)
    imp = sub.add_parser("import-benchmark", help="add a pytest-benchmark JSON to the store's timing table")
    imp.add_argument("json", metavar="BENCHMARK.json")
    _store_option(imp)
    imp.add_argument("--run-id", default=None, help="id of this run in the store (default: time + random)")
    cmp = sub.add_parser("compare", help="regressions and improvements between two runs or versions")
    cmp.add_argument("base", metavar="BASE", help="run id (or prefix), or backend==version, e.g. jax==0.9.2")
    cmp.add_argument("new", metavar="NEW", help="run id (or prefix), or backend==version, e.g. jax==0.10.2")
    _store_option(cmp)
    cmp.add_argument("--out", default=None, metavar="FILE.md",
                     help="Markdown report (default: <store>/comparisons/<BASE>_vs_<NEW>.md)")
    cmp.add_argument("--ulp-factor", type=float, default=2.0,
                     help="an error that grew by more than this factor is a regression (default 2)")
    cmp.add_argument("--min-effect", type=float, default=0.10,
                     help="smallest relative change in median time that counts (default 0.10 = 10%%)")
    cmp.add_argument("--alpha", type=float, default=0.005,
                     help="significance level of the exact test on the per-run times (default 0.005)")
    cmp.add_argument("--statistic", choices=("min", "median"), default="min",
                     help="each timing run's summary that speed is judged on: its fastest round (default; "
                          "other work on the machine only ever adds time) or its median round")
    rep = sub.add_parser("report", help="tables and plots from the store: report.md, report.html, PNGs, CSVs")
    _store_option(rep)
    rep.add_argument("--runs", action="append", metavar="ID,...",
                     help="only these run ids (or prefixes; default: every run in the store)")
    rep.add_argument("--out", default="results/report", metavar="DIR", help="output directory "
                     "(default: results/report)")
    from suite.ab import add_parser as add_ab

    add_ab(sub)
    lst = sub.add_parser("list", help="list backends, cases and tags")
    lst.add_argument("what", nargs="?", choices=("cases", "backends", "tags"), default="cases")
    return p


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default="results", metavar="DIR",
                   help="result store: hive-partitioned parquet by backend/version/device (default: results)")


def _store_args(p: argparse.ArgumentParser) -> None:
    """What a command that writes runs into the store takes."""
    _store_option(p)
    p.add_argument("--run-id", default=None,
                   help="id of this run in the store (default: UTC time + random suffix); give every shard "
                        "of one run the same id")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run only slice I of N of the matrix (deterministic; the N slices merge in the store)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _store_plan(store: str, run_id: str | None, shard: str | None = None):
    """The store, run id and shard named on the command line, checked before anything runs."""
    from suite.store import Shard, Store, check_run_id, new_run_id

    st = Store(store)
    st.check_writable()
    return st, check_run_id(run_id) if run_id else new_run_id(), Shard.parse(shard)


def _backends(args: argparse.Namespace) -> list[str]:
    """--backends, checked against what is installed (default: all installed)."""
    from suite.backend_api import discover

    known = discover()
    installed = [n for n, i in known.items() if i.installed]
    names = choose("backends", split_list(args.backends), list(known), installed)
    missing = [n for n in names if not known[n].installed]
    if missing:
        raise UsageError("not installed: " + "; ".join(f"{n} ({known[n].install_hint})" for n in missing)
                         + f"; installed backends: {', '.join(installed)}")
    return names


def _plan(args: argparse.Namespace):
    from suite.dtypes import DTYPES
    from suite.runner import Plan

    names = _backends(args)
    dtypes = choose("dtypes", split_list(args.dtypes), DTYPES, DTYPES)
    ops = choose("ops", split_list(args.ops), OPS, OPS)
    impls = choose("impls", split_list(args.impls), IMPLS, IMPLS)
    passes = choose("passes", split_list(args.passes), PASSES, PASSES)
    devices = choose("devices", split_list(args.devices), DEVICES, DEVICES)
    files = split_list(args.case_file) or []
    user = [load_case_file(f) for f in files]
    asked = split_list(args.cases)
    cases = ([] if user and asked is None else select_cases(asked)) + user
    dup = sorted({c.name for c in cases if sum(d.name == c.name for d in cases) > 1})
    if dup:
        raise UsageError(f"several cases are named {', '.join(dup)} (a case file is named after its file "
                         "stem); rename one")
    if not cases:
        raise UsageError("no cases selected")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be a positive integer, got {args.jobs}")
    return Plan(backends=names, devices=devices, dtypes=dtypes, ops=ops, impls=impls, passes=passes, cases=cases)


def _written(store, paths: list[Path]) -> str:
    return ", ".join(str(p.relative_to(store.root)) for p in paths) or "nothing"


def cmd_run(args: argparse.Namespace) -> int:
    from suite.results import environment
    from suite.runner import run, summary

    plan = _plan(args)
    store, run_id, shard = _store_plan(args.store, args.run_id, args.shard)
    selected = len(plan.cases)
    plan.cases = shard.take(plan.cases)
    if not plan.cases:
        raise UsageError(f"--shard {shard.index}/{shard.count} selects no case: the run has only {selected} "
                         f"case(s), so use at most {selected} shards")
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    t0 = time.perf_counter()
    written: list[Path] = []

    def store_backend(df) -> None:  # each backend's partitions land as soon as it is done
        written.extend(store.write_table("accuracy", df, run_id, shard))

    df, info = run(plan, progress=False if args.no_progress else None, jobs=jobs, on_backend=store_backend)
    seconds = time.perf_counter() - t0
    env = environment(info, {"run_id": run_id, "table": "accuracy", "shard": f"{shard.index}/{shard.count}",
                             "seconds": round(seconds, 2), "jobs": jobs, "rows": len(df),
                             "cases": [c.name for c in plan.cases]})
    meta = store.write_meta(run_id, "accuracy" + shard.suffix, env)
    print(f"\nrun {run_id}: {len(df)} rows in {seconds:.1f} s -> {store.root}/accuracy/ "
          f"({_written(store, written)}); env: {meta}")
    print("time per backend (summed over workers): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(info.seconds.items(), key=lambda kv: -kv[1])))
    for s in info.skipped:
        print(f"skipped {s}")
    print("\nverdicts per backend x device x impl:")
    print(summary(df).to_string())
    bad = df[df["verdict"].isin(["error"])]
    if len(bad):
        print(f"\n{len(bad)} error rows; first: {bad.iloc[0]['backend']} {bad.iloc[0]['impl']} "
              f"{bad.iloc[0]['op']} {bad.iloc[0]['case']}: {bad.iloc[0]['message']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from suite.bench import BENCH_DEFAULTS, BenchPlan, plot_gbps, run_bench
    from suite.dtypes import DTYPES
    from suite.results import environment
    from suite.timing import DEFAULT_SWEEP, PASSES, cpu_affinity, parse_sizes, threads_for_timing

    names = _backends(args)
    try:
        sizes = parse_sizes(args.sizes) if args.sizes is not None else list(DEFAULT_SWEEP)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.min_time > 0:
        raise UsageError(f"--min-time must be positive, got {args.min_time}")
    store, run_id, shard = _store_plan(args.store, args.run_id, args.shard)
    plan = BenchPlan(
        backends=names, devices=choose("devices", split_list(args.devices), DEVICES, DEVICES),
        dtypes=choose("dtypes", split_list(args.dtypes), DTYPES, BENCH_DEFAULTS["dtypes"]),
        ops=choose("ops", split_list(args.ops), OPS, BENCH_DEFAULTS["ops"]),
        impls=choose("impls", split_list(args.impls), IMPLS, BENCH_DEFAULTS["impls"]),
        passes=choose("passes", split_list(args.passes), PASSES, PASSES),
        sizes=sizes, min_time=args.min_time, threads=threads_for_timing(), shard=shard, order=args.order,
        seed=args.seed)
    t0 = time.perf_counter()
    written: list[Path] = []
    df, info = run_bench(plan, progress=False if args.no_progress else None,
                         on_backend=lambda part: written.extend(store.write_table("timing", part, run_id, shard)))
    env = environment(info, {"run_id": run_id, "table": "timing", "shard": f"{shard.index}/{shard.count}",
                             "seconds": round(time.perf_counter() - t0, 2), "min_time_s": plan.min_time,
                             "copy_bandwidth": {d: {"gbps": g, "how": h, "gbps_end": plan.copy_end.get(d)}
                                                for d, (g, h) in plan.copy.items()},
                             "order": plan.order, "seed": plan.seed, "cpu_affinity": cpu_affinity()})
    meta = store.write_meta(run_id, "timing" + shard.suffix, env)
    plot = meta.with_name(f"timing_gbps{shard.suffix}.png")
    plot_gbps(df, plot)
    print(f"\nrun {run_id}: {len(df)} timings -> {store.root}/timing/ ({_written(store, written)}); "
          f"env and plot: {meta.parent}")
    for d, (g, h) in plan.copy.items():
        end = plan.copy_end.get(d, float("nan"))
        print(f"copy bandwidth {d}: {g:.1f} GB/s at the start, {end:.1f} at the end ({h})")
    for s in info.skipped:
        print(f"skipped {s}")
    shown = df[df.median_s.notna()]
    if len(shown):
        top = shown.sort_values("bytes").groupby(["backend", "device", "dtype", "op", "impl", "pass"]).last()
        print("\nlargest size per configuration (GB/s, % of copy):")
        print(top[["batch", "vocab", "median_s", "gbps", "pct_of_copy"]].round(4).to_string())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from suite.compare import Thresholds, compare, default_report_path, render_markdown, resolve, write_csv
    from suite.store import atomic_write

    th = Thresholds(ulp_factor=args.ulp_factor, min_effect=args.min_effect, alpha=args.alpha,
                    statistic=args.statistic)
    th.check()
    store = _readable_store(args.store)
    problems: list[str] = []
    tables = {t: store.load(t, problems) for t in ("accuracy", "timing")}
    for p in problems:
        print(f"warning: skipped {p}", file=sys.stderr)
    base, new = resolve(tables, args.base), resolve(tables, args.new)
    result = compare(base, new, th)
    md = render_markdown(result, args.base, args.new, th)
    out = Path(args.out) if args.out else default_report_path(store.root, args.base, args.new)
    atomic_write(out, lambda tmp: tmp.write_text(md, encoding="utf-8"))
    csv = write_csv(result, out)
    print(md)
    print(f"-> {out}, {csv.name}")
    return 1 if result.regressions else 0


def cmd_report(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from suite import report

    store = _readable_store(args.store)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out!r} exists and is not a directory")
    data = report.load(store, split_list(args.runs))
    for p in data.problems:
        print(f"warning: skipped {p}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:  # everything is built first, then moved into place
        paths = report.write(data, tmp, report.header(data, store))
        for p in paths:
            os.replace(p, out / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"report -> {out}/report.md, {out}/report.html ({len(paths) - 2} PNG/CSV files beside them)")
    return 0


def _readable_store(path: str):
    from suite.store import Store

    store = Store(path)
    if not store.root.is_dir():
        raise UsageError(f"--store {path!r} is not a directory; a store is written by `python -m suite run` "
                         "and `python -m suite bench` (default: results)")
    return store


def cmd_import_benchmark(args: argparse.Namespace) -> int:
    import json

    from suite.timing import from_benchmark_json

    try:
        df = from_benchmark_json(args.json)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise UsageError(f"{args.json!r} is not a readable pytest-benchmark JSON "
                         f"({type(exc).__name__}: {exc})") from None
    if df.empty:
        raise UsageError(f"{args.json!r} holds no benchmarks from suite/tests/test_benchmarks.py")
    store, run_id, shard = _store_plan(args.store, args.run_id)
    paths = store.write_table("timing", df, run_id, shard)
    store.write_meta(run_id, "timing", {"run_id": run_id, "table": "timing", "source": args.json,
                                        "command": sys.argv})
    print(f"run {run_id}: {len(df)} timings -> {_written(store, paths)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from cases import CASES
    from suite.backend_api import discover

    if args.what == "backends":
        for name, info in discover().items():
            print(f"{name:12s} {'installed' if info.installed else 'not installed: ' + info.install_hint}")
    elif args.what == "tags":
        tags = sorted({t for c in CASES for t in c.tags})
        for t in tags:
            print(f"{t:14s} {sum(t in c.tags for c in CASES)} cases")
    else:
        for c in CASES:
            shape = "x".join(map(str, c.logits.shape))
            print(f"{c.name:28s} {shape:>12s} T={c.temperature:<6g} [{', '.join(c.tags)}] {c.description}")
    return 0


def _cmd_ab(args: argparse.Namespace) -> int:
    from suite.ab import cmd_ab

    return cmd_ab(args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"run": cmd_run, "bench": cmd_bench, "import-benchmark": cmd_import_benchmark,
                    "compare": cmd_compare, "report": cmd_report, "list": cmd_list, "ab": _cmd_ab}
        return commands[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished partitions are kept, nothing half-written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; results were written before printing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
