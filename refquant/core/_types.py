"""Type aliases of the public signatures.

Every refquant module uses postponed evaluation of annotations (``from __future__ import
annotations``), so these are documentation and input for type checkers; nothing checks them at run
time (the ``_checks`` helpers do the checking, with messages naming the argument).

- ``ArrayLike``: anything :func:`numpy.asarray` accepts (the functions convert and validate it).
- ``DTypeLike``: a NumPy dtype or anything :class:`numpy.dtype` accepts.
- ``QRangeLike``: an integer code range — a name (``"int8"``, ``"uint4"``, ``"int8_narrow"``), a
  ``(qmin, qmax)`` pair, or a :class:`refquant.core.ranges.QRange`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

from numpy.typing import ArrayLike, DTypeLike

if TYPE_CHECKING:
    from .ranges import QRange

QRangeLike = Union[str, "tuple[int, int]", "QRange"]

__all__ = ["ArrayLike", "DTypeLike", "QRangeLike"]
