"""The report's CPU-vs-GPU section (suite/device_diff.py) on small made-up rows: pairing by framework, mode and
configuration only, counts per framework x mode x dtype x pass, the mechanism each differing pair's rows
show, and what has no counterpart or ran at other versions."""

from __future__ import annotations

import pandas as pd

from suite import device_diff
from suite.report import Section


def row(device: str, verdict: str = "ok", *, backend: str = "torch", mode: str = "eager", dtype: str = "float32",
        op: str = "softmax", impl: str = "fused", case: str = "c1", pass_: str = "forward", err: float = 1.0,
        flushed: int = 0, nonfinite: int = 0, message: str = "", version: str | None = None,
        run_id: str | None = None) -> dict:
    return {"backend": backend, "backend_version": version or ("2.13.0+cpu" if device == "cpu" else "2.11.0+cu130"),
            "device": device, "mode": mode, "dtype": dtype, "op": op, "impl": impl, "case": case, "pass": pass_,
            "verdict": verdict, "message": message, "ulp_err_scaled": err, "ulp_bound": 10.0, "n_flushed": flushed,
            "n_nonfinite": nonfinite, "run_id": run_id or f"run-{device}"}


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_only_pairs_whose_verdict_differs_are_listed_and_counted():
    acc = frame(row("cpu"), row("gpu"),  # same verdict: counted as paired, not listed
                row("cpu", "inaccurate", case="c2", err=40.0), row("gpu", case="c2", err=3.0),
                row("cpu", case="c3", pass_="backward"), row("gpu", "nonfinite", case="c3", pass_="backward",
                                                             nonfinite=2),
                row("cpu", case="c4", dtype="float64"))  # no GPU partner: not paired
    summ, diff = device_diff.cpu_vs_gpu(acc)
    assert list(diff.case) == ["c2", "c3"]
    s = summ.set_index(["dtype", "pass"])
    assert s.loc[("float32", "forward"), "rows paired"] == 2
    assert s.loc[("float32", "forward"), "verdict differs"] == 1
    assert s.loc[("float32", "forward"), "ok on GPU only"] == 1
    assert s.loc[("float32", "backward"), "ok on CPU only"] == 1
    assert s.loc[("float32", "forward"), "error > x2 on CPU"] == 1
    assert ("float64", "forward") not in s.index
    assert set(summ["CPU version"]) == {"2.13.0+cpu"} and set(summ["GPU version"]) == {"2.11.0+cu130"}


def test_rows_pair_within_one_framework_and_one_mode():
    acc = frame(row("cpu", "inaccurate", err=50.0), row("gpu", backend="jax", mode="compiled"),
                row("cpu", "inaccurate", mode="compiled", err=50.0))
    summ, diff = device_diff.cpu_vs_gpu(acc)
    assert summ.empty and diff.empty  # torch eager CPU has no torch eager GPU row: nothing to compare
    assert device_diff.unpaired(acc) == ["jax compiled on GPU only", "torch compiled on CPU only",
                                         "torch eager on CPU only"]


def test_mechanism_names_what_the_rows_show():
    acc = frame(row("cpu", "error", message="RuntimeError: boom"), row("gpu"),
                row("cpu", "inaccurate", case="c2", flushed=700, err=30.0), row("gpu", case="c2", flushed=3),
                row("cpu", case="c3"), row("gpu", "nonfinite", case="c3", nonfinite=4),
                row("cpu", "inaccurate", case="c4", err=30.0), row("gpu", case="c4", err=2.0))
    mech = device_diff.cpu_vs_gpu(acc)[1].set_index("case").mechanism
    assert mech["c1"] == "CPU error: RuntimeError: boom"
    assert mech["c2"].startswith("flush-to-zero: 3 subnormal results flushed to 0 on the GPU, 700 on the CPU")
    assert "4 NaN/inf on the GPU" in mech["c3"] and "(0 on the CPU)" in mech["c3"]
    assert "graded error 30 on the CPU, 2 on the GPU (bound 10)" in mech["c4"]


def test_no_difference_is_said_not_left_blank():
    summ, diff = device_diff.cpu_vs_gpu(frame(row("cpu"), row("gpu")))
    assert summ["verdict differs"].sum() == 0
    assert diff.iloc[0, 0].startswith("none")


def test_section_states_versions_machines_and_what_has_no_counterpart():
    acc = frame(row("cpu"), row("gpu", run_id="h200-torch"), row("cpu", backend="numpy", version="2.4.6"))
    envs = {"h200-torch": {"accuracy": {"devices": {"torch/gpu": "NVIDIA H200"}}}}
    s = device_diff.section(acc, envs)
    assert isinstance(s, Section) and s.title == "CPU vs GPU"
    assert "torch 2.13.0+cpu (CPU) vs 2.11.0+cu130 (GPU)" in s.note
    assert "accuracy on NVIDIA H200 (run h200-torch)" in s.note
    assert "numpy eager on CPU only" in s.note
    same = device_diff.versions_note(frame(row("cpu", version="1.0"), row("gpu", version="1.0")))
    assert same == "torch 1.0 on both"


def test_no_gpu_rows_gives_empty_tables():
    summ, diff = device_diff.cpu_vs_gpu(frame(row("cpu")))
    assert summ.empty and diff.empty
    assert device_diff.gpu_sources({}, [frame(row("cpu")), pd.DataFrame()]) == ""
