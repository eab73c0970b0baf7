"""A max-shifted softmax family in numpy: graded by `python -m suite run --plugin examples/plugins/numpy_stable.py`.

x arrives as z / T already rounded to the tested dtype, classes on the last axis; return the same dtype.
"""

import numpy as np

FRAMEWORK = "numpy"


def log_softmax(x):
    d = x - np.max(x, axis=-1, keepdims=True)
    return d - np.log(np.sum(np.exp(d), axis=-1, keepdims=True))


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def logsumexp(x):
    m = np.max(x, axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def cross_entropy(x, targets):
    return logsumexp(x) - np.take_along_axis(x, targets[..., None], axis=-1)[..., 0]


def cross_entropy_mean(x, targets):
    return np.mean(cross_entropy(x, targets)).astype(x.dtype)  # np.mean of float16 stays float16; keep it so


def soft_cross_entropy(x, probs):
    lsm = log_softmax(x)
    return -np.sum(np.where(probs == 0, 0, probs * lsm), axis=-1).astype(x.dtype)
