"""Keras 3 on the PyTorch backend: differentiated with torch.autograd.

The ops are zoo/_keras.py's, shared by the four keras plug-ins; this file picks the backend.
"""

import keras  # noqa: F401  (the library it needs: --plugin zoo loads it only where keras is installed)

FRAMEWORK = "torch"
ENV = {"KERAS_BACKEND": "torch"}  # read before import (suite/plugins.py): keras picks its backend once, at import

from zoo._keras import *  # noqa: E402, F403  (the ops, shared by the keras plug-ins)
