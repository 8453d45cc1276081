"""Numerical kernels the modules share (forward-backward, ...): tensors in, tensors out, no graph."""

from .forward_backward import ForwardBackwardResult, forward_backward, forward_backward_torch, viterbi

__all__ = ["ForwardBackwardResult", "forward_backward", "forward_backward_torch", "viterbi"]
