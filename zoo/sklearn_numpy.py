"""scikit-learn's public softmax and log loss (numpy arrays; backward is the suite's analytic VJP with this
softmax).

softmax: sklearn.utils.extmath.softmax, what LogisticRegression.predict_proba applies to its decision
function. cross_entropy_mean: sklearn.metrics.log_loss of those probabilities, the documented way to score
a multinomial classifier (it takes probabilities, not logits, and clips them to [eps, 1 - eps] of their
dtype). log_loss returns a Python float: it is handed back as an array of x's dtype. The per-sample
multinomial loss the linear models minimise is zoo/sklearn_multinomial_numpy.py.
"""

import warnings

import numpy as np
from sklearn.metrics import log_loss
from sklearn.utils.extmath import softmax as _softmax

FRAMEWORK = "numpy"


def softmax(x):
    return _softmax(x.reshape(-1, x.shape[-1])).reshape(x.shape)  # it takes (M, N) only


def cross_entropy_mean(x, targets):
    n = x.shape[-1]
    proba = _softmax(x.reshape(-1, n))
    with warnings.catch_warnings():  # "y_prob values do not sum to one" for rounded float16 rows: noise in a run
        warnings.simplefilter("ignore", UserWarning)
        loss = log_loss(targets.reshape(-1), y_proba=proba, labels=np.arange(n))
    return np.asarray(loss, dtype=x.dtype)
