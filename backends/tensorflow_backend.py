"""TensorFlow: tf.nn.softmax / log_softmax / reduce_logsumexp / *_softmax_cross_entropy_with_logits;
tf.GradientTape for backward.

Mode `compiled` is tf.function(jit_compile=True) (XLA), GradientTape inside it for backward; unless
SUITE_XLA_CACHE is set empty, XLA's persistent cache (TF_XLA_FLAGS --tf_xla_persistent_cache_directory)
is ~/.cache/softmax-suite/xla.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

from suite.backend_api import BaseBackend, quiet_stderr
from suite.formulas import fold_chunks

NAME = "tensorflow"
REQUIRES = "tensorflow"
INSTALL = "pip install tensorflow-cpu"


class TFPrimitives:
    def __init__(self, tf) -> None:
        self.tf = tf
        self.exp, self.log, self.log1p = tf.math.exp, tf.math.log, tf.math.log1p
        self.fold_chunks = functools.partial(fold_chunks, split=lambda x, sizes: tf.split(x, sizes, axis=-1))
        self.where, self.zeros_like, self.mean = tf.where, tf.zeros_like, tf.reduce_mean

    def max(self, x):
        return self.tf.reduce_max(x, axis=-1, keepdims=True)

    def sum(self, x):
        return self.tf.reduce_sum(x, axis=-1, keepdims=True)

    def squeeze(self, x):
        return self.tf.squeeze(x, axis=-1)

    def take(self, x, t):
        return self.tf.gather(x, self.tf.expand_dims(t, -1), batch_dims=len(t.shape))

    def stop_gradient(self, x):
        return self.tf.stop_gradient(x)

    def first_max_mask(self, x):
        return self.tf.one_hot(self.tf.argmax(x, axis=-1), depth=x.shape[-1],
                               on_value=True, off_value=False, dtype=self.tf.bool)


def triton_first() -> None:
    """Load Triton's LLVM before TensorFlow's, where Triton is installed. Both register LLVM's command-line
    options; whichever loads second aborts the process ("LLVM ERROR: inconsistency in registered
    CommandLine options") when TensorFlow came first, as it does when torch.compile, a Triton kernel or
    torch.use_deterministic_algorithms (which imports torch._inductor) follows it in one process. Triton
    loaded first, both work (tensorflow-cpu 2.21.0, triton 3.9.0)."""
    import importlib.util

    if "tensorflow" not in sys.modules and importlib.util.find_spec("triton") is not None:
        try:
            import triton._C.libtriton  # noqa: F401  (its LLVM; 0.2 s)
        except (ImportError, OSError):  # a broken triton is torch's problem, not TensorFlow's
            pass


class Backend(BaseBackend):
    name = NAME
    fused_api = {
        "softmax": "tf.nn.softmax", "log_softmax": "tf.nn.log_softmax",
        "logsumexp": "tf.reduce_logsumexp",
        "cross_entropy": "tf.nn.sparse_softmax_cross_entropy_with_logits",
        "cross_entropy_mean": "reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits)",
        "soft_cross_entropy": "tf.nn.softmax_cross_entropy_with_logits",
    }

    def __init__(self, threads: int | None = None) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ INFO/WARNING/ERROR chatter
        cache = os.environ.get("SUITE_XLA_CACHE", os.path.expanduser("~/.cache/softmax-suite/xla"))
        if cache and "tf_xla_persistent_cache_directory" not in os.environ.get("TF_XLA_FLAGS", ""):
            os.environ["TF_XLA_FLAGS"] = (os.environ.get("TF_XLA_FLAGS", "")
                                          + f" --tf_xla_persistent_cache_directory={cache}").strip()
        triton_first()
        with quiet_stderr():  # absl prints before TF reads the variable
            import tensorflow as tf
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TF's runtime already started in this process
                pass

        tf.get_logger().setLevel("ERROR")  # "triggered tf.function retracing": one program per shape is the point
        self.tf = tf
        self.version = tf.__version__
        self.xp = TFPrimitives(tf)
        self._dt = {"float16": tf.float16, "bfloat16": tf.bfloat16,
                    "float32": tf.float32, "float64": tf.float64}

    def devices(self):
        gpu = None if self.tf.config.list_physical_devices("GPU") else "TensorFlow lists no GPU"
        return {"cpu": None, "gpu": gpu}

    def _dev(self, device):
        return "/GPU:0" if device == "gpu" else "/CPU:0"

    def device_name(self, device):
        if device != "gpu":
            return "cpu"
        gpu = self.tf.config.list_physical_devices("GPU")[0]
        return self.tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)

    def put(self, a, dtype, device):
        with self.tf.device(self._dev(device)):
            return self.tf.cast(self.tf.constant(np.asarray(a, dtype=np.float64)), self._dt[dtype])

    def put_targets(self, a, device):
        with self.tf.device(self._dev(device)):
            return self.tf.constant(np.asarray(a, dtype=np.int64))

    def random_normal(self, shape, dtype, device, seed):
        with self.tf.device(self._dev(device)):
            return self.tf.random.stateless_normal(shape, seed=[seed, 0], dtype=self._dt[dtype])

    def full(self, shape, value, dtype, device):
        with self.tf.device(self._dev(device)):
            return self.tf.fill(shape, self.tf.constant(value, dtype=self._dt[dtype]))

    def hands_copies(self, mode):
        """A tf.Tensor has no in-place operation: ops return new tensors and .numpy() is a copy
        (suite/tests/test_containment.py tries it), so every call may be handed the same tensor."""
        return False

    def copy(self, a):
        with self.tf.device(a.device):
            return self.tf.raw_ops.DeepCopy(x=a)  # tf.identity may hand back the same buffer

    def same(self, a, b):
        tf = self.tf
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.is_floating:  # bit for bit: NaN == NaN, -0 != +0
            ints = {2: tf.int16, 4: tf.int32, 8: tf.int64}[a.dtype.size]
            a, b = tf.bitcast(a, ints), tf.bitcast(b, ints)
        return bool(tf.reduce_all(tf.equal(a, b)))

    def settings(self):
        tf = self.tf
        return {**super().settings(),
                "tf.tensor_float_32_execution": tf.config.experimental.tensor_float_32_execution_enabled(),
                "tf.functions_run_eagerly": tf.config.functions_run_eagerly()}

    def restore(self, settings):
        super().restore(settings)
        tf = self.tf
        tf.config.experimental.enable_tensor_float_32_execution(settings["tf.tensor_float_32_execution"])
        tf.config.run_functions_eagerly(settings["tf.functions_run_eagerly"])

    def is_array(self, x):
        return self.tf.is_tensor(x)

    def to_numpy(self, x):
        return self.tf.cast(x, self.tf.float64).numpy()

    def out_dtype(self, x):
        return x.dtype.name

    def fused(self, op, x, targets, probs):
        tf = self.tf
        if op == "softmax":
            return tf.nn.softmax(x, axis=-1)
        if op == "log_softmax":
            return tf.nn.log_softmax(x, axis=-1)
        if op == "logsumexp":
            return tf.reduce_logsumexp(x, axis=-1)
        if op == "soft_cross_entropy":
            return tf.nn.softmax_cross_entropy_with_logits(labels=probs, logits=x)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=x)
        return tf.reduce_mean(ce) if op == "cross_entropy_mean" else ce

    def modes(self, device):
        return {"eager": None, "compiled": None}

    def compile(self, fn):
        """tf.function(jit_compile=True): XLA compiles the whole step (GradientTape included for backward)
        once per input shape and dtype."""
        return self.tf.function(fn, jit_compile=True)

    def compile_error(self, exc):
        text = str(exc)
        return exc if isinstance(exc, self.tf.errors.OpError) and ("XLA" in text or "jit_compile" in text) else None

    def vjp(self, fn, z, cotangent):
        with self.tf.GradientTape() as tape:
            tape.watch(z)
            out = fn(z)
        return tape.gradient(out, z, output_gradients=cotangent)

    def threads(self):
        cfg = self.tf.config.threading
        return {"tf_intra_op": cfg.get_intra_op_parallelism_threads(),
                "tf_inter_op": cfg.get_inter_op_parallelism_threads()}

    def sync(self, device):
        pass  # to_numpy reads the result, which waits for the device

    def wait(self, out):
        sync = getattr(getattr(self.tf.test, "experimental", None), "sync_devices", None)
        if sync is not None and self.tf.config.list_physical_devices("GPU"):
            sync()  # eager CPU kernels finish before returning; GPU ones are queued

    def copy_fn(self, src):
        return (lambda: self.tf.math.negative(src)), "tf.math.negative"
