"""The multinomial loss scikit-learn's linear models minimise: sklearn._loss.HalfMultinomialLoss (numpy).

LogisticRegression (multinomial), HistGradientBoostingClassifier and SGD-style solvers all evaluate this
object; the documentation exposes no public per-sample loss of logits (sklearn.metrics.log_loss takes
probabilities: zoo/sklearn_numpy.py), so this plug-in calls the private module at the locked version
(docs/zoo.md says why). Its Cython kernels are compiled for float32 and float64 only.
"""

import numpy as np
from sklearn._loss.loss import HalfMultinomialLoss

FRAMEWORK = "numpy"


def _args(x, targets):
    n = x.shape[-1]
    raw = np.ascontiguousarray(x.reshape(-1, n))
    return HalfMultinomialLoss(n_classes=n), targets.reshape(-1).astype(x.dtype), raw


def softmax(x):
    loss, _, raw = _args(x, np.zeros(x.shape[:-1], dtype=np.int64))
    return loss.predict_proba(raw).reshape(x.shape)


def cross_entropy(x, targets):
    loss, y, raw = _args(x, targets)
    return loss.loss(y_true=y, raw_prediction=raw).reshape(x.shape[:-1])


def cross_entropy_mean(x, targets):
    loss, y, raw = _args(x, targets)
    return np.asarray(loss(y_true=y, raw_prediction=raw), dtype=x.dtype)  # np.average: a float64 scalar
