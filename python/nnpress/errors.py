"""Exception types of nnpress, in one place.

``FormatError`` (a subclass of ``ValueError``) means the bytes are bad: corrupt, truncated, of a
foreign or unsupported format, or larger than a configured limit. It is the C++ extension's own
exception type, re-exported here, so errors raised deep in C++ and in Python are the same class.
Bad arguments raise plain ``ValueError``/``TypeError``.
"""
from ._core import FormatError

__all__ = ["FormatError"]
