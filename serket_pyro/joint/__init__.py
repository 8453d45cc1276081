"""Joint mode: a connected graph of modules fitted as one Pyro program.

:func:`joint_program` compiles any connected graph of modules with joint hooks
(:class:`JointProgram`); :func:`joint_model` keeps the VaDE recipe (:class:`JointModel`) for the
graphs VAE -> GMM (-> MarkovModel) and compiles every other graph."""

from .compiler import JointProgram, joint_program
from .model import JointModel, joint_model

__all__ = ["JointModel", "JointProgram", "joint_model", "joint_program"]
