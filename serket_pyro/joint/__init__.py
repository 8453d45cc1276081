"""Joint mode: a connected graph of modules fitted as one Pyro program (:func:`joint_model`)."""

from .model import JointModel, joint_model

__all__ = ["JointModel", "joint_model"]
