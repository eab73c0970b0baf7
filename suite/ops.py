"""The names every backend and the harness agree on: ops, passes, implementations."""

from __future__ import annotations

OPS: tuple[str, ...] = (
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",  # integer targets, one loss per row
    "cross_entropy_mean",  # integer targets, mean over rows
    "soft_cross_entropy",  # probability targets, -sum(p * log q) per row
)
ROW_OPS = ("softmax", "log_softmax")  # output has the logits' shape
PASSES: tuple[str, ...] = ("forward", "backward")
IMPLS: tuple[str, ...] = ("naive", "shifted", "temperature", "shifted_log1p", "online", "fused")
STABLE_IMPLS: tuple[str, ...] = ("shifted", "shifted_log1p", "online", "fused")
DEVICES: tuple[str, ...] = ("cpu", "gpu")
# nonfinite: NaN/inf where the exact answer is finite; wrong_special: not the exact NaN/+-inf where the
# answer is one (suite.metrics); mutates_input: the call wrote into (or donated) an array it was handed;
# changes_settings: it changed a process-wide setting (suite.runner; its outputs are graded all the same)
VERDICTS: tuple[str, ...] = ("ok", "inaccurate", "nonfinite", "wrong_special", "mutates_input", "changes_settings",
                             "error", "unsupported")
