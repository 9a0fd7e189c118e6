"""Exception types of nnpress, in one place.

``FormatError`` (a subclass of ``ValueError``) means the bytes are bad: corrupt, truncated, of a
foreign or unsupported format, or larger than a configured limit. It is the C++ extension's own
exception type, re-exported here, so errors raised deep in C++ and in Python are the same class.
``PickledObjectError`` (a ``FormatError``) is a ``.pt`` file that holds pickled Python objects (e.g.
a whole model) rather than only tensors: nnpress loads weights only, never arbitrary pickles.
``NnpMismatchError`` (a ``RuntimeError``) means a well-formed file does not hold the tensors a model
needs (names or shapes), from ``nnpress.load_state_dict``, ``nnpress.from_pretrained`` and
``nnpress.nn.convert``. Bad arguments raise plain ``ValueError``/``TypeError``.
"""

from ._core import FormatError

__all__ = ["FormatError", "NnpMismatchError", "PickledObjectError"]


class PickledObjectError(FormatError):
    """A ``.pt`` file that holds pickled Python objects (e.g. a whole model), not only tensors."""


class NnpMismatchError(RuntimeError):
    """The ``.nnp`` file does not hold the tensors the model needs (names or shapes)."""
