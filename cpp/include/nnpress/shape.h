// nnpress/shape.h — how a tensor shape maps to the rows x cols matrix that everything codes.
//
// CONTRACT
//   rows_cols_of(shape): for ndim >= 2, rows = shape[0] and cols = the product of the other
//   dimensions; for ndim 0 or 1 a single row (rows = 1, cols = the element count), or no row when
//   the tensor is empty. The level coder resets its neighbourhood at every row, the container
//   splits quantized tensors into blocks of whole rows, the quantizers and the dependent
//   quantization state restart per row, and channel scales are per row / per column of this view.
//   Unchecked: the caller makes sure the product of the dimensions does not overflow.
#pragma once

#include <cstdint>
#include <vector>

namespace nnpress {

inline void rows_cols_of(const std::vector<uint64_t>& shape, uint64_t* rows, uint64_t* cols) {
  uint64_t count = 1;
  for (uint64_t d : shape) count *= d;
  if (shape.size() >= 2) {
    *rows = shape[0];
    *cols = shape[0] ? count / shape[0] : 0;
  } else {
    *rows = count ? 1 : 0;
    *cols = count;
  }
}

}  // namespace nnpress
