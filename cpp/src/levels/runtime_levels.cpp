// Model::decode_level_matrix (nnpress/runtime.h), in its own file so that a static link of the runtime
// pulls in the integer-level matrices and kernels only when an app calls it.
#include "nnpress/kernels/levels.h"
#include "nnpress/runtime.h"

namespace nnpress {

Status Model::decode_level_matrix(const std::string& name, levels::LevelMatrix* out, unsigned threads) const {
  if (out == nullptr) return finish(invalid_argument("decode_level_matrix: null output"));
  size_t i;
  Status s = reader_.find(name, &i);
  if (s.ok()) s = levels::level_matrix_from_reader(reader_, i, out, effective_threads(threads));
  return finish(s);
}

}  // namespace nnpress
