"""`python -m suite run|bench|compare|ab|report|import-benchmark|list`: the accuracy matrix (`run`), the timing
sweep (`bench`), comparisons of runs and versions (`compare`, `ab`) and the published tables (`report`) from
the command line; every result goes to a store (default results/local).

Exit status: 0 done; 1 `compare` found a regression; 2 bad input or usage (nothing written);
3 done, but some store files or incomplete runs were skipped (listed in the output); 4 the file
system failed part way (disk full, no permission: the message says what was kept); 5 an internal
error (a bug: SUITE_TRACEBACK=1 shows the traceback); 6 `run` finished, but a worker died or a call
timed out (those calls are error rows saying why; every other row was computed); 130 interrupted
(^C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import time
from pathlib import Path

from suite.ops import DEVICES, IMPLS, OPS, PASSES
from suite.selection import UsageError, choose, load_case_file, select_cases, split_list
from suite.store import DEFAULT_STORE, PUBLISHED_STORE, StoreWriteError, os_reason

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_SKIPPED, EXIT_IO, EXIT_BUG, EXIT_CONTAINED = 0, 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled as ^C is (the run is marked interrupted, finished partitions kept)."""


def _on_sigterm(signum, frame):
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line (what is wrong, where to look), exit status 2, like every other error."""

    def __init__(self, *args, **kwargs) -> None:  # subcommands' parsers too (argparse makes them of this class)
        kwargs.setdefault("allow_abbrev", False)  # --backend is not --backends: an unknown option is an error
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"error: {' '.join(message.split())} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m suite", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the accuracy matrix into the store (<store>/accuracy/ partitions, "
                                     "<store>/runs/<id>/accuracy.json)")
    for name, what in (("backends", "frameworks"), ("dtypes", "dtypes"), ("ops", "ops"),
                       ("impls", "implementations"), ("passes", "forward/backward"),
                       ("devices", "cpu/gpu"), ("cases", "case names or tags")):
        run.add_argument(f"--{name}", action="append", metavar="A,B",
                         help=f"comma-separated {what} (default: all{' installed' if name == 'backends' else ''})")
    _modes_option(run)
    run.add_argument("--case-file", action="append", metavar="F.npz",
                     help="your own logits (npz: logits, optional targets, temperature, probs); one file per option "
                          "(repeat it for several; a path is never split at a comma)")
    _store_args(run)
    _plugin_option(run)
    run.add_argument("--jobs", type=int, default=None, metavar="N",
                     help="worker processes, each computing one (backend, dtype) task at a time (default: number of "
                          "CPUs); every row is computed in a worker, each plug-in in workers of its own")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="longest one implementation call (or one compiled program of a case) may take before its "
                          "worker is stopped and the call becomes an error row (default: 900)")
    run.add_argument("--gpu-jobs", type=int, default=None, metavar="N",
                     help="workers that may hold the GPU at once (default: 1); the others have it hidden")
    bench = sub.add_parser("bench", help="time every backend/device/dtype/op/impl over a size sweep into the store "
                                         "(<store>/timing/ partitions, <store>/runs/<id>/timing.json)")
    for name, what, default in (("backends", "frameworks", "all installed"), ("dtypes", "dtypes", "float32,bfloat16"),
                                ("ops", "ops", "softmax,log_softmax,cross_entropy"),
                                ("impls", "implementations", "fused,shifted,naive and plug-ins"),
                                ("passes", "forward,forward+backward", "both"), ("devices", "cpu/gpu", "all")):
        bench.add_argument(f"--{name}", action="append", metavar="A,B",
                           help=f"comma-separated {what} (default: {default})")
    _modes_option(bench)
    bench.add_argument("--sizes", default=None, metavar="BxV,...",
                       help="batch x vocab list, e.g. 64x131072,256x8192 (default: a sweep of 4 KiB .. 256 MiB)")
    bench.add_argument("--min-time", type=float, default=0.2, help="seconds of measured rounds (default 0.2)")
    bench.add_argument("--order", choices=("grid", "random"), default="grid",
                       help="configuration order: grid, or shuffled with --seed (default grid)")
    bench.add_argument("--seed", type=int, default=None, help="seed of --order random (recorded in env.json)")
    _store_args(bench)
    _plugin_option(bench)
    imp = sub.add_parser("import-benchmark", help="add a pytest-benchmark JSON to the store's timing table")
    imp.add_argument("json", metavar="BENCHMARK.json", help="what `pytest --benchmark-json=FILE` wrote "
                     "(suite/tests/test_benchmarks.py; docs/benchmarking.md)")
    _store_option(imp)
    imp.add_argument("--run-id", default=None, help="id of this run in the store (default: time + random)")
    cmp = sub.add_parser("compare", help="regressions and improvements between two runs or versions")
    cmp.add_argument("base", metavar="BASE", help="run id (or prefix), backend==version (e.g. jax==0.9.2), "
                     "or package==version: the runs whose env.json records it (e.g. ml_dtypes==0.6.0)")
    cmp.add_argument("new", metavar="NEW", help="run id (or prefix), backend==version (e.g. jax==0.10.2), "
                     "or package==version: the runs whose env.json records it (e.g. ml_dtypes==0.7.0)")
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
    rep.add_argument("--out", default=None, metavar="DIR", help="output directory "
                     f"(default: <store>/report; the published report: --store {PUBLISHED_STORE})")
    from suite.ab import add_parser as add_ab

    add_ab(sub)
    lst = sub.add_parser("list", help="list backends, cases and tags")
    lst.add_argument("what", nargs="?", choices=("cases", "backends", "tags"), default="cases",
                     help="cases (default: name, shape, temperature, tags, description), tags with their case "
                          "counts, or backends and whether each is installed")
    return p


def _modes_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modes", action="append", metavar="eager,compiled",
                   help="eager and/or compiled (torch.compile, tf.function(jit_compile=True), jax.jit); default: "
                        "each framework's own (JAX compiled, the others eager); modes a framework lacks are "
                        "skipped with the reason")


def _modes(args: argparse.Namespace) -> list[str] | None:
    from suite.modes import MODES

    return None if args.modes is None else choose("modes", split_list(args.modes), MODES, MODES)


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=DEFAULT_STORE, metavar="DIR",
                   help=f"result store: hive-partitioned parquet by backend/version/device (default: {DEFAULT_STORE}, "
                        f"git-ignored; the published store is {PUBLISHED_STORE})")


def _store_args(p: argparse.ArgumentParser) -> None:
    """What a command that writes runs into the store takes."""
    _store_option(p)
    p.add_argument("--run-id", default=None,
                   help="id of this run in the store (default: UTC time + random suffix); give every shard "
                        "of one run the same id")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run only slice I of N of the matrix (deterministic; the N slices merge in the store)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", metavar="FILE.py|module",
                   help="grade an implementation from outside the suite (repeatable; docs/plugins.md); "
                        "installed packages' entry points (softmax_suite.plugins) load too")
    p.add_argument("--no-entry-points", action="store_true",
                   help="load no installed package's plug-in (entry points, softmax_suite.plugins); a broken one "
                        "is otherwise a warning and left out, unless --impls names it")


def _plugins(args: argparse.Namespace, names: list[str], default: list[str]) -> tuple[list[str], list]:
    """--impls with the plug-ins (loaded and checked first) as choices and in the default."""
    from suite import plugins

    found = plugins.load_all(args.plugin, entry_points=not args.no_entry_points, wanted=split_list(args.impls))
    extra = [p.name for p in found]
    impls = choose("impls", split_list(args.impls), [*IMPLS, *extra], [*default, *extra])
    idle = [p for p in found if p.name in impls and p.framework not in names]
    if idle and args.impls is not None:
        raise UsageError("; ".join(f"plug-in {p.name!r} runs on {p.framework}, which --backends leaves out"
                                   for p in idle) + f"; selected backends: {', '.join(names)}")
    return impls, [p for p in found if p.name in impls]


def _store_plan(store: str, run_id: str | None, shard: str | None = None):
    """The store, run id and shard named on the command line, checked before anything runs."""
    from suite.store import Shard, Store, check_run_id, new_run_id

    run_id = check_run_id(run_id) if run_id else new_run_id()
    shard = Shard.parse(shard)
    st = Store(store)
    st.check_writable()
    return st, run_id, shard


class _Writes:
    """One run's writes into the store: claimed before computing, what was kept, and a failed write as
    one line that says so (the run stays marked incomplete)."""

    def __init__(self, store, table: str, run_id: str, shard, meta: dict):
        self.store, self.table, self.run_id, self.shard = store, table, run_id, shard
        self.meta = {"run_id": run_id, "table": table, "shard": f"{shard.index}/{shard.count}",
                     "command": sys.argv, **meta}
        self.status = store.claim(table, run_id, shard, self.meta)
        self.written: list[Path] = []
        self.rows: dict[str, int] = {}  # partition (relative to <store>/<table>) -> rows: env.json's `partitions`

    def kept(self) -> str:
        return _written(self.store, self.written)

    def mark(self, status: str, error: str) -> bool:
        """Best effort: the status file says why the run did not complete."""
        try:
            self.store.write_meta(self.run_id, self.table + self.shard.suffix,
                                  {**self.meta, "status": status, "error": error, "partitions": dict(self.rows)})
            return True
        except OSError:
            return False

    @contextlib.contextmanager
    def guard(self):
        """^C or a bug while computing: the status file says so (a failed write has said it already)."""
        try:
            yield
        except KeyboardInterrupt as exc:
            self.mark("interrupted", "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (^C)")
            raise
        except StoreWriteError:
            raise
        except Exception as exc:
            self.mark("failed", f"{type(exc).__name__}: {_one_line(exc)}")
            raise

    def fail(self, exc: OSError) -> StoreWriteError:
        reason = os_reason(exc) + (f": {exc.filename}" if exc.filename else "")
        marked = "marked failed" if self.mark("failed", f"writing failed: {reason}") else \
            f"left marked running in {self.status}"
        return StoreWriteError(f"writing run {self.run_id} to the store {self.store.root} failed ({reason}); "
                               f"kept: {self.kept()}; the run is {marked}, so readers skip it")

    def partitions(self, df) -> None:
        try:
            self.store.write_table(self.table, df, self.run_id, self.shard, self.written, self.rows)
        except OSError as exc:
            raise self.fail(exc) from None

    def complete(self, env: dict) -> Path:
        try:
            return self.store.write_meta(self.run_id, self.table + self.shard.suffix,
                                         {**env, "partitions": dict(self.rows), "status": "complete"})
        except OSError as exc:
            raise self.fail(exc) from None


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
    impls, used = _plugins(args, names, list(IMPLS))
    passes = choose("passes", split_list(args.passes), PASSES, PASSES)
    devices = choose("devices", split_list(args.devices), DEVICES, DEVICES)
    files = list(args.case_file or [])  # one path per --case-file: a path may hold a comma
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
    if args.gpu_jobs is not None and args.gpu_jobs < 1:
        raise UsageError(f"--gpu-jobs must be a positive integer, got {args.gpu_jobs}")
    if args.timeout is not None and not (args.timeout > 0 and args.timeout != float("inf")):
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    return Plan(backends=names, devices=devices, dtypes=dtypes, ops=ops, impls=impls, passes=passes, cases=cases,
                plugins=[p.source for p in used], modes=_modes(args))


def _described(impls: list[str]) -> list[dict]:
    from suite import plugins

    return [p.describe() for name in impls if (p := plugins.get(name)) is not None]


def _written(store, paths: list[Path]) -> str:
    return ", ".join(str(p.relative_to(store.root)) for p in paths) or "nothing"


def _fits_in_memory(plan, jobs: int, jobs_given: bool) -> None:
    """Refuse, before anything is computed or written, a run whose cases would not fit in memory (suite.memory)."""
    from suite.memory import refusal
    from suite.workers import make_tasks

    why = refusal([c.logits.size for c in plan.cases], min(jobs, len(make_tasks(plan))), jobs_given)
    if why:
        raise UsageError(why)


def cmd_run(args: argparse.Namespace) -> int:
    from suite.results import environment
    from suite.runner import run, summary
    from suite.store import Shard

    plan = _plan(args)
    shard = Shard.parse(args.shard)
    selected = len(plan.cases)
    plan.cases = shard.take(plan.cases)
    if not plan.cases:
        raise UsageError(f"--shard {shard.index}/{shard.count} selects no case: the run has only {selected} "
                         f"case(s), so use at most {selected} shards")
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    _fits_in_memory(plan, jobs, args.jobs is not None)
    store, run_id, shard = _store_plan(args.store, args.run_id, args.shard)
    writes = _Writes(store, "accuracy", run_id, shard, {})
    t0 = time.perf_counter()
    # each backend's partitions land as soon as it is done
    with writes.guard():
        df, info = run(plan, progress=False if args.no_progress else None, jobs=jobs, on_backend=writes.partitions,
                       timeout=args.timeout, gpu_jobs=args.gpu_jobs)
    seconds = time.perf_counter() - t0
    compile_s = _compile_totals(df)
    from suite.workers import DEFAULT_TIMEOUT

    env = environment(info, {**writes.meta, "seconds": round(seconds, 2), "jobs": jobs, "rows": len(df),
                             "cpu_seconds": info.cpu, "wall_seconds": info.seconds,
                             "timeout_s": args.timeout or DEFAULT_TIMEOUT, "gpu": info.gpu,
                             "worker_failures": info.failures, "plugin_import_settings": info.notes,
                             "modes": plan.modes or "default", "compile_s": compile_s,
                             "cases": [c.name for c in plan.cases], "plugins": _described(plan.impls)})
    meta = writes.complete(env)
    print(f"\nrun {run_id}: {len(df)} rows in {seconds:.1f} s -> {store.root}/accuracy/ "
          f"({writes.kept()}); env: {meta}")
    print("CPU time per backend (the workers' process CPU time): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(info.cpu.items(), key=lambda kv: -kv[1])))
    if compile_s:
        print("compile time (summed over workers): " + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items()))
    for s in info.skipped:
        print(f"skipped {s}")
    from suite.findings import summary_lines  # what is broken where, and why rows were not graded

    print("\n" + "\n".join(summary_lines(df)))
    print("\nverdicts per backend x device x mode x impl:")
    print(summary(df).to_string())
    for verdict, what in (("mutates_input", "wrote into their inputs"),
                          ("changes_settings", "changed process settings")):
        hit = df[df["verdict"] == verdict]
        if len(hit):
            print(f"{len(hit)} rows {what} (verdict {verdict}): "
                  + ", ".join(f"{b} {i} ({n})" for (b, i), n in hit.groupby(["backend", "impl"]).size().items()))
    for note in info.notes:
        print(f"warning: {note}")
    if info.failures:
        print(f"\n{len(info.failures)} worker(s) died or were stopped; only the calls they were making are lost "
              "(error rows saying why):")
        for f in info.failures[:10]:
            print(f"  {f}")
        return EXIT_CONTAINED
    return 0


def _compile_totals(df) -> dict[str, float]:
    """Seconds spent compiling, per backend/device/mode (rows of compiled modes only)."""
    if "compile_s" not in df or df["compile_s"].isna().all():
        return {}
    sums = df.groupby(["backend", "device", "mode"])["compile_s"].sum(min_count=1).dropna()
    return {"/".join(k): round(float(v), 2) for k, v in sums.items()}


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
    t_plugins = time.perf_counter()
    impls, _ = _plugins(args, names, BENCH_DEFAULTS["impls"])
    t_plugins = time.perf_counter() - t_plugins
    modes = _modes(args)
    chosen = dict(devices=choose("devices", split_list(args.devices), DEVICES, DEVICES),
                  dtypes=choose("dtypes", split_list(args.dtypes), DTYPES, BENCH_DEFAULTS["dtypes"]),
                  ops=choose("ops", split_list(args.ops), OPS, BENCH_DEFAULTS["ops"]),
                  impls=impls,
                  passes=choose("passes", split_list(args.passes), PASSES, PASSES))
    store, run_id, shard = _store_plan(args.store, args.run_id, args.shard)  # after every other check
    plan = BenchPlan(backends=names, **chosen, sizes=sizes, min_time=args.min_time, threads=threads_for_timing(),
                     shard=shard, order=args.order, seed=args.seed, modes=modes)
    writes = _Writes(store, "timing", run_id, shard, {})
    t0 = time.perf_counter()
    with writes.guard():
        df, info = run_bench(plan, progress=False if args.no_progress else None, on_backend=writes.partitions)
    seconds = time.perf_counter() - t0
    env = environment(info, {**writes.meta, "seconds": round(seconds, 2),
                             "overhead": plan.costs.summary(seconds + t_plugins, t_plugins),
                             "min_time_s": plan.min_time,
                             "copy_bandwidth": {d: {"gbps": g, "how": h, "gbps_end": plan.copy_end.get(d)}
                                                for d, (g, h) in plan.copy.items()},
                             "order": plan.order, "seed": plan.seed, "cpu_affinity": cpu_affinity(),
                             "modes": plan.modes or "default", "compile_s": _compile_totals(df),
                             "plugins": _described(plan.impls)})
    plot = writes.status.with_name(f"timing_gbps{shard.suffix}.png")
    try:
        plot_gbps(df, plot)
    except OSError as exc:
        raise writes.fail(exc) from None
    meta = writes.complete(env)
    print(f"\nrun {run_id}: {len(df)} timings -> {store.root}/timing/ ({writes.kept()}); "
          f"env and plot: {meta.parent}")
    for d, (g, h) in plan.copy.items():
        end = plan.copy_end.get(d, float("nan"))
        print(f"copy bandwidth {d}: {g:.1f} GB/s at the start, {end:.1f} at the end ({h})")
    over = env["overhead"]
    if over["measured_s"]:
        print(f"time: {over['wall_s']:.1f} s for {over['measured_s']:.1f} s of measured rounds (overhead "
              f"{over['overhead_pct_of_measured']:.0f} %: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                                     over["parts_s"].items()) + ")")
    for s in info.skipped:
        print(f"skipped {s}")
    shown = df[df.median_s.notna()]
    if len(shown):
        top = shown.sort_values("bytes").groupby(["backend", "device", "mode", "dtype", "op", "impl", "pass"]).last()
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
    out = Path(args.out) if args.out else default_report_path(store.root, args.base, args.new)
    where = f"--out {args.out!r}" if args.out else \
        f"the comparison file {str(out)!r} (in the store; --out FILE.md writes it elsewhere)"
    _check_out_file(out, where)  # before the work: a read-only store or a bad --out loses nothing
    problems: list[str] = []
    tables = {t: store.load(t, problems) for t in ("accuracy", "timing")}
    runs = store.runs(problems)  # each run's env.json: package selectors (ml_dtypes==0.6.0), package versions
    for p in problems:
        print(f"warning: skipped {p}", file=sys.stderr)
    try:
        base, new = (resolve(tables, sel, runs, store.left_out) for sel in (args.base, args.new))
    except UsageError as exc:
        raise UsageError(f"{exc}{f' ({len(problems)} skipped file(s) or run(s) listed above)' if problems else ''}"
                         ) from None
    result = compare(base, new, th)
    md = render_markdown(result, args.base, args.new, th)
    if problems:
        md += (f"\n## Skipped ({len(problems)})\n\nThese files or runs could not be used, so the comparison "
               "may be missing rows:\n\n" + "".join(f"- {p}\n" for p in problems))
    try:
        atomic_write(out, lambda tmp: tmp.write_text(md, encoding="utf-8"))
        csv = write_csv(result, out)
    except OSError as exc:
        print(md)
        raise StoreWriteError(f"writing {where} failed ({os_reason(exc)}); the comparison is printed above") from None
    print(md)
    print(f"-> {out}, {csv.name}")
    if result.regressions:
        return EXIT_REGRESSION
    return EXIT_SKIPPED if problems else EXIT_OK


def _check_out_file(out: Path, where: str) -> None:
    """An output file: not a directory, a name the file system takes, in a place that takes a new file; a usage
    error now rather than a failure after the work (naming the path given, never a temporary file's)."""
    try:
        if out.is_dir():
            raise UsageError(f"{where} is a directory; give a file name, e.g. {str(out / 'comparison.md')!r}")
        limit = os.pathconf(out.parent, "PC_NAME_MAX") if out.parent.is_dir() else 255
    except OSError as exc:
        raise UsageError(f"{where} cannot be used: {os_reason(exc)}") from None
    if len(os.fsencode(out.with_suffix(".csv").name)) > limit or len(os.fsencode(out.name)) > limit:
        raise UsageError(f"{where}: the file name is longer than the file system allows ({limit} bytes); "
                         "choose a shorter one")
    _check_place(out.parent, where)


def _check_place(folder: Path, where: str) -> None:
    """`folder` (or, while it does not exist, its nearest existing parent, where it would be made) takes a new
    file; nothing is left behind."""
    from suite.store import partial_prefix

    try:
        up = next((a for a in [folder, *folder.parents] if os.path.lexists(a)), Path("."))
        if not up.is_dir():
            raise UsageError(f"{where} cannot be written: {str(up)!r} is not a directory")
        probe = up / f"{partial_prefix()}probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{where} is not writable: {os_reason(exc)}; choose a writable place") from None


def cmd_report(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from suite import report
    from suite.store import Store, partial_prefix

    store = _readable_store(args.store)
    out = Path(args.out) if args.out else store.root / "report"
    where = f"--out {args.out!r}" if args.out else \
        f"the report directory {str(out)!r} (the default --out, in the store; --out DIR writes it elsewhere)"
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"{where} exists and is not a directory")
    _check_place(out, where)  # before the work
    data = report.load(store, split_list(args.runs))
    Store(out).check_writable(where)  # makes it, and clears a killed report's leftovers
    for p in data.problems:
        print(f"warning: skipped {p}", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(), dir=out))
    try:  # everything is built first, then moved into place
        paths = report.write(data, tmp, report.header(data, store))
        for p in paths:
            os.replace(p, out / p.name)
    except OSError as exc:
        raise StoreWriteError(f"writing the report to {out} failed ({os_reason(exc)}); the previous report "
                              "files there are kept as they were, except any already replaced") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"report -> {out}/report.md, {out}/report.html ({len(paths) - 2} PNG/CSV files beside them)")
    if data.problems:
        print(f"{len(data.problems)} file(s) or run(s) skipped: listed above and in report.md", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


def _readable_store(path: str):
    from suite.store import Store

    store = Store(path)
    try:
        usable = stat.S_ISDIR(os.stat(store.root).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        usable = False
    except OSError as exc:  # a name too long, a loop of links: bad input, not a failed write
        raise UsageError(f"--store {path!r} cannot be used: {os_reason(exc)}") from None
    if not usable:
        raise UsageError(f"--store {path!r} is not a directory; a store is written by `python -m suite run` and "
                         f"`python -m suite bench` (default: {DEFAULT_STORE}; the published store: {PUBLISHED_STORE})")
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
    writes = _Writes(store, "timing", run_id, shard, {"source": args.json})
    writes.partitions(df)
    writes.complete(writes.meta)
    print(f"run {run_id}: {len(df)} timings -> {writes.kept()}")
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
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _main(args)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)


def _main(args: argparse.Namespace) -> int:
    try:
        commands = {"run": cmd_run, "bench": cmd_bench, "import-benchmark": cmd_import_benchmark,
                    "compare": cmd_compare, "report": cmd_report, "list": cmd_list, "ab": _cmd_ab}
        return commands[args.command](args)
    except UsageError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except StoreWriteError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt as exc:
        print("interrupted: finished partitions are kept, nothing half-written; the run stays marked incomplete",
              file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader left; results were written before printing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # a file-system failure outside the store's writes (an output file, a read)
        print(f"error: {os_reason(exc)}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return EXIT_IO
    except Exception as exc:
        if os.environ.get("SUITE_TRACEBACK"):
            raise
        print(f"internal error (a bug; SUITE_TRACEBACK=1 shows the traceback): {type(exc).__name__}: "
              f"{_one_line(exc)}", file=sys.stderr)
        return EXIT_BUG


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
