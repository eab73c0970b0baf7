"""What the four keras plug-ins (keras_jax, keras_torch, keras_tensorflow, keras_numpy) call: the public API
users call, keras.ops.softmax / log_softmax / logsumexp and keras.losses SparseCategoricalCrossentropy /
CategoricalCrossentropy(from_logits=True), per sample (reduction=None) and mean. Imported by a plug-in after its
ENV has set KERAS_BACKEND (its worker starts with it), so keras runs on that plug-in's backend. Not a plug-in
itself (a leading underscore: --plugin zoo leaves it out)."""

import keras

__all__ = ["cross_entropy", "cross_entropy_mean", "log_softmax", "logsumexp", "soft_cross_entropy", "softmax"]


def softmax(x):
    return keras.ops.softmax(x, axis=-1)


def log_softmax(x):
    return keras.ops.log_softmax(x, axis=-1)


def logsumexp(x):
    return keras.ops.logsumexp(x, axis=-1)


def _rows(x, y):
    """Keras losses take a batch of rows: leading axes flattened (a 1-D case is one row)."""
    n = x.shape[-1]
    return keras.ops.reshape(x, (-1, n)), keras.ops.reshape(y, (-1,) if y.ndim < x.ndim else (-1, n))


def _back(loss, x):
    """Per-sample losses in x's leading shape and dtype. A Loss computes in its own dtype (keras' floatx,
    float32, unless dtype= is passed, which users rarely do); the cast back is what a caller mixing it into
    x's dtype does, so a float64 input is graded through float32 (docs/zoo.md)."""
    return keras.ops.cast(keras.ops.reshape(loss, x.shape[:-1]), x.dtype)


def cross_entropy(x, targets):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    logits, labels = _rows(x, targets)
    return _back(loss(labels, logits), x)


def cross_entropy_mean(x, targets):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # reduction "sum_over_batch_size"
    logits, labels = _rows(x, targets)
    return keras.ops.cast(loss(labels, logits), x.dtype)


def soft_cross_entropy(x, probs):
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None)
    logits, labels = _rows(x, probs)
    return _back(loss(labels, logits), x)
