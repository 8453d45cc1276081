"""The original's ``serket.utils``: :class:`GroupSum`, :class:`TextSaver`, :class:`Buffer`.

``import serket.utils`` becomes ``import serket_pyro.utils`` (this module; one file per class in
:mod:`serket_pyro.modules`).
"""

from .buffer import Buffer
from .group_sum import GroupSum
from .text_saver import TextSaver

__all__ = ["Buffer", "GroupSum", "TextSaver"]
