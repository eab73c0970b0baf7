"""Deliberately wrong: the seeds' naive formula, exp(x) / sum(exp(x)) with no max shift.

exp overflows past x ~ 88.7 in float32 (709.8 in float64), so the suite flags it `nonfinite` on the
seed cases with logits like [1000, 1, -1000] (seeds 000/001/003/004), exactly as it flags the built-in
`naive`.
"""

import numpy as np

FRAMEWORK = "numpy"
NAME = "seed_naive"


def softmax(x):
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


def log_softmax(x):
    return np.log(softmax(x))


def cross_entropy(x, targets):
    return -np.log(np.take_along_axis(softmax(x), targets[..., None], axis=-1)[..., 0])
