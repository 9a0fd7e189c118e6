"""Fisher information of a torch model's parameters, for the rate-distortion quantizers, and a
data-free sensitivity probe. One module per job:

- :mod:`.diagonal` - :func:`fisher_diagonal`, the diagonal Fisher F_i per weight (the
  ``importance`` of ``nnpress.quantize`` / ``nnpress.compress``).
- :mod:`.kfac` - :func:`fisher_hessians` and :func:`fisher_row_hessians`, the Kronecker-factored
  column and row blocks of the Fisher: the ``hessians`` / ``row_hessians`` of the quantizers'
  error feedback; :func:`fisher_kfac_blocks` gives both from one pass. ``fisher_column_blocks``
  and ``fisher_row_blocks`` are their former names, deprecated (a DeprecationWarning at each
  call) and removed in the next release.
- :mod:`.probe` - :func:`probe_sensitivity`, for when no calibration data exists.
- :mod:`.batches` - the calibration protocol the estimators share: what a batch, a model output
  and a label may be, ``max_examples``, eval mode while running, seeds.
- :mod:`.likelihood` - what the estimators differentiate: ``mode`` (sampled / empirical),
  ``output`` (classifier / gaussian / auto), ``sigma``, and the seeded draws of y.

Importing this package needs only the standard library; torch is imported inside the functions.
"""

from __future__ import annotations

from .batches import LABEL_KEY as LABEL_KEY
from .diagonal import GRAD_MEMORY_BUDGET as GRAD_MEMORY_BUDGET
from .diagonal import fisher_diagonal
from .kfac import fisher_column_blocks as fisher_column_blocks  # deprecated
from .kfac import fisher_hessians, fisher_kfac_blocks, fisher_row_hessians
from .kfac import fisher_row_blocks as fisher_row_blocks  # deprecated
from .likelihood import IGNORE_INDEX as IGNORE_INDEX
from .probe import probe_sensitivity

__all__ = ["fisher_diagonal", "fisher_hessians", "fisher_kfac_blocks", "fisher_row_hessians", "probe_sensitivity"]
