"""optax.safe_softmax_cross_entropy on JAX: the soft-label loss that documents finite results where
softmax_cross_entropy gives NaN (-inf logits with zero-probability labels). Its own plug-in because the
plug-in API has one soft_cross_entropy per implementation (optax.softmax_cross_entropy: zoo/optax_jax.py).
"""

import optax

FRAMEWORK = "jax"


def soft_cross_entropy(x, probs):
    return optax.safe_softmax_cross_entropy(x, probs)
