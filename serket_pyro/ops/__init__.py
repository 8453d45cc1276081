"""Numerical kernels the modules share (forward-backward, k-means): tensors in, tensors out, no graph."""

from .forward_backward import ForwardBackwardResult, forward_backward, forward_backward_torch, viterbi
from .kmeans import KMeansResult, kmeans, kmeans_plusplus

__all__ = ["ForwardBackwardResult", "KMeansResult", "forward_backward", "forward_backward_torch", "kmeans",
           "kmeans_plusplus", "viterbi"]
