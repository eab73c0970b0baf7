"""Conformance and accuracy suite for softmax, log_softmax, logsumexp and cross-entropy."""
