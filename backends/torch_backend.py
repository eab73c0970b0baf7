"""PyTorch: torch.softmax / log_softmax / logsumexp / F.cross_entropy; torch.autograd for backward.

Mode `compiled` is torch.compile (Inductor) with static shapes; unless SUITE_INDUCTOR_CACHE is set empty,
Inductor's on-disk caches (FX graphs, kernels, AOTAutograd) live in ~/.cache/softmax-suite/inductor.
"""

from __future__ import annotations

import functools
import os
import shutil

import numpy as np

from suite.backend_api import BaseBackend
from suite.formulas import fold_chunks

NAME = "torch"
REQUIRES = "torch"
INSTALL = "pip install torch==2.13.0  (the CPU build; any other version pulls CUDA packages)"


class TorchPrimitives:
    def __init__(self, torch) -> None:
        self.t = torch
        self.exp, self.log, self.log1p = torch.exp, torch.log, torch.log1p
        self.fold_chunks = functools.partial(fold_chunks, split=lambda x, sizes: torch.split(x, sizes, dim=-1))
        self.where, self.zeros_like, self.mean = torch.where, torch.zeros_like, torch.mean

    def max(self, x):
        return self.t.amax(x, dim=-1, keepdim=True)

    def sum(self, x):
        return self.t.sum(x, dim=-1, keepdim=True)

    def squeeze(self, x):
        return x.squeeze(-1)

    def take(self, x, t):
        return self.t.gather(x, -1, t.unsqueeze(-1))

    def stop_gradient(self, x):
        return x.detach()

    def first_max_mask(self, x):
        idx = self.t.argmax(x, dim=-1, keepdim=True)
        return self.t.zeros(x.shape, dtype=self.t.bool, device=x.device).scatter(-1, idx, True)


class Backend(BaseBackend):
    name = NAME
    fused_api = {
        "softmax": "torch.softmax", "log_softmax": "torch.log_softmax",
        "logsumexp": "torch.logsumexp",
        "cross_entropy": "F.cross_entropy(reduction='none')",
        "cross_entropy_mean": "F.cross_entropy(reduction='mean')",
        "soft_cross_entropy": "F.cross_entropy(probability targets, reduction='none')",
    }

    def __init__(self, threads: int | None = None) -> None:
        cache = os.environ.get("SUITE_INDUCTOR_CACHE", os.path.expanduser("~/.cache/softmax-suite/inductor"))
        if cache:  # read by Inductor when it first compiles; kept across runs (compiled mode's cost is here)
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache)
        import torch
        import torch.nn.functional as F

        if threads:
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(threads)
            except RuntimeError:  # only settable before the first parallel work
                pass

        self.torch, self.F = torch, F
        self.version = torch.__version__
        self.xp = TorchPrimitives(torch)
        self._dt = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                    "float32": torch.float32, "float64": torch.float64}

    def devices(self):
        gpu = None if self.torch.cuda.is_available() else "torch.cuda.is_available() is False"
        return {"cpu": None, "gpu": gpu}

    def _dev(self, device):
        return "cuda" if device == "gpu" else "cpu"

    def device_name(self, device):
        return self.torch.cuda.get_device_name(0) if device == "gpu" else "cpu"

    def put(self, a, dtype, device):
        t = self.torch.tensor(np.asarray(a, dtype=np.float64), device=self._dev(device))  # a copy: the suite's
        return t.to(self._dt[dtype])  # arrays are shared by every framework's task and must stay as they are

    def put_targets(self, a, device):
        return self.torch.as_tensor(np.asarray(a, dtype=np.int64), device=self._dev(device))

    def random_normal(self, shape, dtype, device, seed):
        gen = self.torch.Generator(device=self._dev(device)).manual_seed(seed)
        return self.torch.randn(shape, generator=gen, dtype=self._dt[dtype], device=self._dev(device))

    def full(self, shape, value, dtype, device):
        return self.torch.full(shape, value, dtype=self._dt[dtype], device=self._dev(device))

    def copy(self, a):
        return a.detach().clone()

    def same(self, a, b):
        torch = self.torch
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return False
        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
        if a.is_floating_point():  # bit for bit: NaN == NaN, -0 != +0
            a, b = a.contiguous().view(ints[a.element_size()]), b.contiguous().view(ints[b.element_size()])
        return bool(torch.equal(a, b))

    def settings(self):
        torch = self.torch  # torch.set_flush_denormal: the base class's "denormals flushed"
        return {**super().settings(), "torch.default_dtype": torch.get_default_dtype(),
                "torch.num_threads": torch.get_num_threads(),
                "torch.deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
                "torch.grad_enabled": torch.is_grad_enabled()}

    def restore(self, settings):
        super().restore(settings)
        torch = self.torch
        now = self.settings()  # only what differs: use_deterministic_algorithms imports torch._inductor
        setters = {"torch.default_dtype": torch.set_default_dtype, "torch.num_threads": torch.set_num_threads,
                   "torch.deterministic_algorithms": torch.use_deterministic_algorithms,
                   "torch.float32_matmul_precision": torch.set_float32_matmul_precision,
                   "torch.grad_enabled": torch.set_grad_enabled}
        for key, setter in setters.items():
            if now[key] != settings[key]:
                setter(settings[key])

    def release(self, device):
        if device == "gpu":
            self.torch.cuda.empty_cache()

    def is_array(self, x):
        return isinstance(x, self.torch.Tensor)

    def to_numpy(self, x):
        return x.detach().to("cpu", self.torch.float64).numpy()

    def out_dtype(self, x):
        return str(x.dtype).removeprefix("torch.")

    def fused(self, op, x, targets, probs):
        torch, F = self.torch, self.F
        if op == "softmax":
            return torch.softmax(x, dim=-1)
        if op == "log_softmax":
            return torch.log_softmax(x, dim=-1)
        if op == "logsumexp":
            return torch.logsumexp(x, dim=-1)
        xc = x.movedim(-1, 1) if x.ndim > 2 else x  # F.cross_entropy wants classes on dim 1
        if op == "soft_cross_entropy":
            pc = probs.movedim(-1, 1) if probs.ndim > 2 else probs
            return F.cross_entropy(xc, pc, reduction="none")
        return F.cross_entropy(xc, targets, reduction="mean" if op == "cross_entropy_mean" else "none")

    def modes(self, device):
        return {"eager": None, "compiled": self._no_compiler if device == "cpu" else None}

    def _no_compiler(self) -> str | None:
        """Inductor writes C++ on the CPU: the compiler it would look for (its config.cpp.cxx: $CXX or g++)."""
        from torch._inductor import config

        names = [c for c in (config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)) if c]
        if any(shutil.which(c) for c in names):
            return None
        return (f"no C++ compiler for Inductor on the CPU (looked for {', '.join(names) or 'none'} on PATH; "
                "install g++ or set CXX)")

    def compile(self, fn):
        """torch.compile as a training script uses it, with static shapes (dynamic=False: one program per
        shape and dtype, like a fixed batch and vocabulary) and fullgraph=True, so a graph break is a
        compile error rather than a silent return to eager code. Dynamo's recompile limit (8 per function)
        would otherwise fall back to eager after 8 shapes; here it fails instead, and is set high enough
        for the catalog's shapes x dtypes."""
        import torch._dynamo.config as dynamo

        dynamo.recompile_limit = dynamo.accumulated_recompile_limit = 1_000_000
        dynamo.fail_on_recompile_limit_hit = True
        return self.torch.compile(fn, fullgraph=True, dynamic=False)

    def compile_backward(self, forward, backward):
        """The compiled forward, differentiated by autograd: AOTAutograd compiles the backward graph with
        Inductor too (loss.backward() on a compiled model). autograd.grad inside torch.compile would break
        the graph."""
        fwd = self.compile(forward)
        return lambda a, t, p, g: self.vjp(lambda x: fwd(x, t, p, g), a, g)

    def compile_error(self, exc):
        from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException

        if isinstance(exc, BackendCompilerFailed):
            return getattr(exc, "inner_exception", None) or exc
        return exc if isinstance(exc, TorchDynamoException) else None

    def vjp(self, fn, z, cotangent):
        zz = z.detach().requires_grad_(True)
        (grad,) = self.torch.autograd.grad(fn(zz), zz, grad_outputs=cotangent)
        return grad

    def threads(self):
        return {"torch_intra_op": self.torch.get_num_threads(),
                "torch_inter_op": self.torch.get_num_interop_threads()}

    def sync(self, device):
        if device == "gpu":
            self.torch.cuda.synchronize()

    def wait(self, out):
        if getattr(out, "is_cuda", False):
            self.torch.cuda.synchronize()

    def copy_fn(self, src):
        dst = self.torch.empty_like(src)
        return (lambda: dst.copy_(src)), "torch.Tensor.copy_"

    def free_memory(self, device):
        return self.torch.cuda.mem_get_info()[0] if device == "gpu" else super().free_memory(device)
