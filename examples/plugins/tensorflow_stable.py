"""A max-shifted softmax family in TensorFlow (eager tensors; backward through tf.GradientTape)."""

import tensorflow as tf

FRAMEWORK = "tensorflow"


def log_softmax(x):
    d = x - tf.stop_gradient(tf.reduce_max(x, axis=-1, keepdims=True))
    return d - tf.math.log(tf.reduce_sum(tf.exp(d), axis=-1, keepdims=True))


def softmax(x):
    e = tf.exp(x - tf.stop_gradient(tf.reduce_max(x, axis=-1, keepdims=True)))
    return e / tf.reduce_sum(e, axis=-1, keepdims=True)


def logsumexp(x):
    m = tf.stop_gradient(tf.reduce_max(x, axis=-1, keepdims=True))
    return tf.squeeze(m + tf.math.log(tf.reduce_sum(tf.exp(x - m), axis=-1, keepdims=True)), -1)


def cross_entropy(x, targets):
    return logsumexp(x) - tf.gather(x, targets, batch_dims=len(targets.shape))


def cross_entropy_mean(x, targets):
    return tf.reduce_mean(cross_entropy(x, targets))


def soft_cross_entropy(x, probs):
    lsm = log_softmax(x)
    return -tf.reduce_sum(tf.where(probs == 0, tf.zeros_like(lsm), probs * lsm), axis=-1)
