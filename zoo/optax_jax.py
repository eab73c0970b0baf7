"""optax's classification losses on JAX (called under jax.jit, differentiated with jax.vjp).

optax.softmax_cross_entropy_with_integer_labels (per sample, and its mean as training loops take it) and
optax.softmax_cross_entropy (soft labels). optax has no softmax of its own (it leaves that to jax.nn), so
those ops are left out; optax.safe_softmax_cross_entropy is the plug-in zoo/optax_safe_jax.py.
"""

import jax.numpy as jnp
import optax

FRAMEWORK = "jax"


def cross_entropy(x, targets):
    return optax.softmax_cross_entropy_with_integer_labels(x, targets)


def cross_entropy_mean(x, targets):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, targets))


def soft_cross_entropy(x, probs):
    return optax.softmax_cross_entropy(x, probs)
