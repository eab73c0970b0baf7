"""Keras 3 on the JAX backend: the suite calls it under jax.jit and differentiates it with jax.vjp.

The ops are zoo/_keras.py's, shared by the four keras plug-ins; this file picks the backend.
"""

import keras  # noqa: F401  (the library it needs: --plugin zoo loads it only where keras is installed)

FRAMEWORK = "jax"
ENV = {"KERAS_BACKEND": "jax"}  # read before import (suite/plugins.py): keras picks its backend once, at import

from zoo._keras import *  # noqa: E402, F403  (the ops, shared by the keras plug-ins)
