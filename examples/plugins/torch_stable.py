"""A max-shifted softmax family in PyTorch (graded forward, and backward through torch.autograd).

x is a torch tensor of the tested dtype on the tested device; in the backward pass it requires grad.
"""

import torch

FRAMEWORK = "torch"


def log_softmax(x):
    d = x - x.amax(dim=-1, keepdim=True).detach()  # the shift is a constant: softmax(x - c) = softmax(x)
    return d - d.exp().sum(dim=-1, keepdim=True).log()


def softmax(x):
    e = (x - x.amax(dim=-1, keepdim=True).detach()).exp()
    return e / e.sum(dim=-1, keepdim=True)


def logsumexp(x):
    m = x.amax(dim=-1, keepdim=True).detach()
    return (m + (x - m).exp().sum(dim=-1, keepdim=True).log()).squeeze(-1)


def cross_entropy(x, targets):
    return logsumexp(x) - x.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def cross_entropy_mean(x, targets):
    return cross_entropy(x, targets).mean()


def soft_cross_entropy(x, probs):
    lsm = log_softmax(x)
    return -torch.where(probs == 0, torch.zeros_like(lsm), probs * lsm).sum(dim=-1)
