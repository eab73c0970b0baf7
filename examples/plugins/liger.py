"""Liger-Kernel's Triton softmax and cross-entropy (liger-kernel >= 0.8.5, triton >= 3.9), as a plug-in.

Through Liger's public functional API (liger_kernel.transformers.functional), called as a user calls it:
`liger_softmax(x)` and `liger_cross_entropy(x, targets, reduction=...)`; the backward pass is autograd
through Liger's own backward. Liger defines no log_softmax, logsumexp or soft cross-entropy, so those
rows are `unsupported`.

On a GPU: `python -m suite run --devices gpu --backends torch --plugin examples/plugins/liger.py`.
Without one, Triton's interpreter runs the same kernels on CPU tensors (slowly; set it before Python
starts, Triton reads it when the kernels are defined):
`TRITON_INTERPRET=1 python -m suite run --backends torch --plugin examples/plugins/liger.py --impls liger`.

What the suite finds (docs/gpu.md): its cross-entropy writes its gradient into its input during the
forward call when the input requires grad (rows `mutates_input`); its softmax refuses rows wider than
65,536 classes; its float64 cross-entropy is computed to about float32 accuracy.
"""

from liger_kernel.transformers.functional import liger_cross_entropy, liger_softmax

FRAMEWORK = "torch"
NAME = "liger"


def softmax(x):
    return liger_softmax(x)


def _rows(x, targets):
    """Liger takes (tokens, vocab) logits and (tokens,) targets: leading dimensions flattened, as a model
    hands them over (`logits.view(-1, vocab)`; a view, so what Liger writes into it reaches x)."""
    return x.reshape(-1, x.shape[-1]), targets.reshape(-1)


def cross_entropy(x, targets):
    return liger_cross_entropy(*_rows(x, targets), reduction="none").reshape(targets.shape)


def cross_entropy_mean(x, targets):
    return liger_cross_entropy(*_rows(x, targets), reduction="mean")
