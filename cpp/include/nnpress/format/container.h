// nnpress/format/container.h — the .nnp file (format version 1.0/1.1): read it, decode tensors, write it.
//
// CONTRACT
//   The byte layout is specified in docs/FORMAT.md and frozen by tests/golden/*.nnp.
//   A .nnp file holds a tensor table (name, dtype, shape, role, how it is stored, quantizer
//   parameters, chunk list with a CRC-32C per chunk) and independent chunks. A quantized tensor is
//   split into row blocks (whole rows, one DeepCABAC payload each), so tensors and blocks of large
//   tensors decode in parallel and any tensor decodes alone (random access by name).
//
//   Reading (always built, no encoder needed):
//     ContainerReader r;
//     Status s = ContainerReader::open_file("model.nnp", &r);          // or open_memory / open_bytes
//     if (!s.ok()) { fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
//     size_t i;
//     s = r.find("fc1.weight", &i);                                    // kNotFound if absent
//     const TensorInfo& t = r.tensor(i);                               // name, dtype, shape, ...
//     std::vector<uint8_t> buf(t.output_bytes());
//     s = r.decode(i, buf.data(), buf.size(), /*threads=*/2);          // original dtype, little endian
//     // or everything at once, in parallel:
//     std::vector<std::vector<uint8_t>> bufs(r.tensor_count());
//     std::vector<void*> outs; std::vector<size_t> sizes;
//     for (size_t k = 0; k < r.tensor_count(); ++k) {
//       bufs[k].resize(r.tensor(k).output_bytes()); outs.push_back(bufs[k].data()); sizes.push_back(bufs[k].size());
//     }
//     s = r.decode_all(outs, sizes, /*threads=*/2);
//
//   - open_* parses and checks the whole header and table: magic, version, header and table CRCs,
//     every count, length, dimension and offset against the real file size, UTF-8 and uniqueness
//     of names, that the chunks tile the data region exactly (so every byte of the file is covered
//     by some checksum) and that no tensor claims more elements than its chunks can hold
//     (kMaxLevelsPerPayloadByte levels per byte for coded data, exactly size/itemsize for raw
//     data) or than ReaderOptions::limits allow. It allocates only in proportion to the table's
//     real size. It does not decode chunks.
//   - decode* checks each chunk's CRC-32C before decoding it (a raw chunk over 4 MiB is copied in
//     pieces on several threads, and its CRC, combined from the pieces', is checked once all are
//     copied); a mismatch or a bad payload is a kCorrupt/kTruncated Status whose message names the
//     tensor and the chunk. Results are
//     bit-identical for every thread count; with several errors the one of the first failing chunk
//     in request order (tensors by index, each tensor's chunks in file order) is reported, whatever
//     the thread count. `threads` = 0 means std::thread::hardware_concurrency(). A thread that
//     cannot be started is not an error: the threads that did start do its work.
//   - Values: quantized tensors decode with the reconstruction rule of their quantizer
//     (nnpress/quant/dequantize.h: u * step with u = level for nearest/rdoq, the dependent-
//     quantization index for trellis; with channel scales u * step_ij, step_ij = (step *
//     2^(row_exp[i]/8)) * 2^(col_exp[j]/8)), computed in double and rounded once to the tensor's dtype
//     for float64/float32; float16/bfloat16 go through that float32 value with
//     round-to-nearest-even. Raw tensors are their stored little-endian bytes.
//   - All functions return Status and never throw (except std::bad_alloc), abort or read outside
//     the buffers they are given. Output buffers are the caller's; their size is checked. On a
//     decode error the output holds unspecified values.
//   - open_file maps a regular file read-only (POSIX mmap, MAP_PRIVATE) instead of reading it: opening
//     reads the header and the table (the mapping is advised MADV_RANDOM, so no read-ahead pulls in
//     the data region), and decoding a tensor reads only its chunks (each asked for with
//     MADV_WILLNEED just before it is checked and decoded). Once decoded, a chunk's pages are given
//     back (MADV_DONTNEED; the OS keeps them in its page cache), so decoding a whole file tensor by
//     tensor does not keep the file resident in the process. Every count and offset is checked
//     against the file's size at open, as for bytes in memory; a table claimed larger than the file
//     is rejected before anything is touched or allocated. Pipes, devices and platforms without
//     mmap (no POSIX) read the whole file into memory instead.
//
//   Writing (only with NNPRESS_ENCODER=ON): fill TensorInput records and call write_container, which
//   builds the whole file in memory, or append them one by one to a ContainerFileWriter, which
//   streams them to a temporary file and renames it onto the destination when finished. Both give
//   the same bytes. Chunks are coded in parallel; the output bytes are identical for every thread
//   count.
//
// SURPRISES
//   - open_memory does not copy: the buffer must outlive the reader. open_bytes owns its copy;
//     open_file owns its mapping (the file is unmapped and closed with the reader).
//   - A mapped file that someone else changes while the reader is open: replacing it by rename (as
//     ContainerFileWriter and nnpress.compress do) is safe — the mapping keeps the old file. Every
//     decode call first checks that the file still has the size it had at open and returns kIo
//     ("changed size") otherwise. What remains: truncating the file *during* a decode call makes
//     the pages past the new end unreadable and the process gets SIGBUS (the mmap rule; no check can
//     close that window), and bytes rewritten in place are caught by the chunk CRCs only if they
//     change before the chunk is checked (a change between a chunk's CRC check and its decoding
//     gives wrong values, never an out-of-bounds read: decoding is bounds-checked throughout).
//     Do not truncate or rewrite a .nnp file in place while it is open.
//   - An alias entry (tied weights) has no chunks of its own; decoding it decodes its target.
//   - The quantizer method is part of the format: it selects the reconstruction rule (trellis
//     levels are state-machine indices, about half the size of plain levels at the same step).
//     Row blocks hold whole rows, and the dependent-quantization state restarts at every row, so
//     blocks decode independently for every method.
//   - Hosts must be little-endian (x86-64, aarch64); raw data is copied as is.
//   - Channel scales (format 1.1): a quantized tensor may carry per-row and/or per-column step
//     exponents (int8, scale 2^(e/8)). In memory it is still Storage::kQuantized (TensorInfo::
//     row_scale_exp / col_scale_exp non-empty); on disk it is storage code 3, which only 1.1 files
//     may use. The writer stamps 1.1 only on files that contain such a tensor, so files without
//     scales stay byte-identical 1.0 files that every 1.x reader decodes. A 1.0 reader rejects a
//     1.1 file that has scales (unknown storage code 3) — it can never misread one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nnpress/cabac/level_coder.h"
#include "nnpress/quant/dequantize.h"
#include "nnpress/status.h"

namespace nnpress {

constexpr uint16_t kContainerVersionMajor = 1;
constexpr uint16_t kContainerVersionMinor = 1;  // the highest minor version this build reads/writes
// On-disk storage code of a quantized tensor with channel scales (format 1.1; docs/FORMAT.md).
constexpr uint8_t kStorageCodeQuantizedScaled = 3;
// Bits of its scale_flags byte.
constexpr uint8_t kScaleFlagRows = 1, kScaleFlagCols = 2;
constexpr size_t kContainerHeaderSize = 40;
// File signature: \x89 N N P \r \n \x1a \n (as PNG's: catches text-mode and 7-bit damage).
extern const uint8_t kContainerMagic[8];

enum class DType : uint8_t {
  kFloat32 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kFloat64 = 4,
  kInt8 = 5,
  kUInt8 = 6,
  kInt16 = 7,
  kInt32 = 8,
  kInt64 = 9,
  kBool = 10,
  kUInt16 = 11,
  kUInt32 = 12,
  kUInt64 = 13,
};
enum class TensorRole : uint8_t { kWeight = 0, kBias = 1, kNorm = 2, kEmbedding = 3, kBuffer = 4, kOther = 5 };
enum class Storage : uint8_t { kRaw = 0, kQuantized = 1, kAlias = 2 };

// Bytes per element (0 for an unknown code); true for float dtypes that may be quantized.
size_t dtype_size(DType d);
bool dtype_is_float(DType d);
const char* dtype_name(DType d);     // "float32", "bfloat16", ... ("?" if unknown)
const char* role_name(TensorRole r); // "weight", "bias", "norm", "embedding", "buffer", "other"
const char* method_name(QuantMethod m);  // "nearest", "rdoq", "trellis" (QuantMethod: quant/dequantize.h)

struct ChunkRef {
  uint64_t offset = 0, size = 0;  // absolute file offset and length in bytes
  uint32_t crc = 0;               // CRC-32C of the chunk's bytes
  uint64_t first_row = 0, rows = 0;  // quantized: the row block this chunk holds
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::kFloat32;
  TensorRole role = TensorRole::kWeight;
  Storage storage = Storage::kRaw;
  std::vector<uint64_t> shape;
  uint64_t count = 0;  // product of shape (1 for a scalar)
  // Quantized only:
  QuantMethod method = QuantMethod::kNearest;
  LevelParams params;
  double step = 0.0, lambda = 0.0;
  uint64_t rows = 0, cols = 0, rows_per_block = 0;
  // Channel scales (quantized, format 1.1): rows / cols exponents, empty if absent, and their
  // values 2^(e/8) (channel_scale_of_exp, dequantize.h) for the decoder.
  std::vector<int8_t> row_scale_exp, col_scale_exp;
  std::vector<double> row_scale, col_scale;
  bool has_channel_scales() const { return !row_scale_exp.empty() || !col_scale_exp.empty(); }
  // Alias only: index of the tensor whose data this one shares.
  uint32_t alias_of = 0;
  std::vector<ChunkRef> chunks;

  size_t output_bytes() const { return size_t(count) * dtype_size(dtype); }
  uint64_t stored_bytes() const;  // sum of chunk sizes (0 for an alias)
};

struct ReaderOptions {
  DecodeLimits limits;             // max elements per tensor
  uint64_t max_total_elements = uint64_t(1) << 38;  // sum over all tensors (aliases excluded)
  uint32_t max_tensors = 1u << 24;
};

class ContainerReader {
 public:
  ContainerReader();
  ~ContainerReader();
  ContainerReader(ContainerReader&&) noexcept;
  ContainerReader& operator=(ContainerReader&&) noexcept;
  ContainerReader(const ContainerReader&) = delete;
  ContainerReader& operator=(const ContainerReader&) = delete;

  // Parse a file held in memory (not copied: keep it alive), a buffer the reader takes over, or a
  // file read entirely into memory. On failure *out is left empty. kInvalidArgument: null out,
  // null data with size > 0. Bad bytes (message says what and where): kTruncated (the file ends
  // inside the signature, header, table or a structure the table describes), kCorrupt (signature,
  // checksums, codes, counts, offsets, names, chunk tiling, trailing bytes), kUnsupported (major
  // version other than 1, header flags, an unknown quantizer method or reserved byte, a storage
  // code of a newer minor version), kLimit (ReaderOptions limits, 64-bit overflow, a tensor too
  // large for this machine's size_t). open_file: kIo if the file cannot be opened, mapped or read,
  // or is a folder; the other messages are prefixed with the path. decode* and verify_checksums on
  // a mapped file: kIo if the file's size changed since it was opened.
  static Status open_memory(const uint8_t* data, size_t size, ContainerReader* out,
                            const ReaderOptions& options = ReaderOptions());
  static Status open_bytes(std::vector<uint8_t> bytes, ContainerReader* out,
                           const ReaderOptions& options = ReaderOptions());
  static Status open_file(const std::string& path, ContainerReader* out,
                          const ReaderOptions& options = ReaderOptions());

  size_t tensor_count() const { return tensors_.size(); }
  const TensorInfo& tensor(size_t i) const { return tensors_[i]; }  // i < tensor_count()
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  Status find(const std::string& name, size_t* index) const;  // kNotFound if absent; null index: kInvalidArgument
  const std::string& metadata() const { return metadata_; }   // opaque UTF-8 (JSON by convention)
  uint16_t version_minor() const { return version_minor_; }
  size_t file_size() const { return size_; }

  // Decode tensor i into out (output_bytes() bytes, the tensor's dtype). For a quantized tensor
  // its row blocks decode on up to `threads` threads. kInvalidArgument: i out of range (by name:
  // kNotFound), null out with out_bytes > 0, out_bytes != output_bytes(). kCorrupt / kTruncated:
  // a chunk's checksum or payload is bad. A tensor with no elements is not read at all.
  Status decode(size_t i, void* out, size_t out_bytes, unsigned threads = 1) const;
  Status decode(const std::string& name, void* out, size_t out_bytes, unsigned threads = 1) const;
  // The integer levels of a quantized tensor (count int32 values), before dequantization; an alias
  // of a quantized tensor gives its target's levels. kInvalidArgument: i out of range, a tensor that
  // is not quantized, out_count != count, null out with out_count > 0; kCorrupt / kTruncated as
  // decode.
  Status decode_levels(size_t i, int32_t* out, uint64_t out_count, unsigned threads = 1) const;
  // Rows [row_begin, row_begin + row_count) of those levels (rows of the tensor's rows x cols view),
  // row_count * cols int32 values: what a consumer that builds from the levels a block of rows at a
  // time holds instead of the whole tensor's. Each chunk's CABAC stream is sequential, so the chunks
  // (TensorInfo::chunks, row blocks) overlapping the range are decoded whole, and a chunk reaching
  // outside it goes through a scratch buffer of its size: ranges on chunk boundaries cost nothing
  // extra. kInvalidArgument: i out of range, a tensor that is not quantized, a range outside the
  // rows, out_count != row_count * cols, null out with out_count > 0; kCorrupt / kTruncated as decode.
  Status decode_levels_rows(size_t i, uint64_t row_begin, uint64_t row_count, int32_t* out, uint64_t out_count,
                            unsigned threads = 1) const;
  // Decode many tensors at once: outs/out_bytes have tensor_count() entries; a null out skips that
  // tensor. All chunks of all requested tensors share one pool of `threads` threads.
  // kInvalidArgument: outs or out_bytes of the wrong length, an out_bytes[i] != output_bytes() for a
  // non-null outs[i] (checked before anything is decoded); kCorrupt / kTruncated as decode.
  Status decode_all(const std::vector<void*>& outs, const std::vector<size_t>& out_bytes, unsigned threads = 0) const;
  // Checks every chunk's CRC without decoding: kCorrupt naming the first bad chunk in file order.
  Status verify_checksums() const;

 private:
  struct Task;
  struct Scratch;
  Status parse(const ReaderOptions& options);
  Status run_tasks(std::vector<Task>& tasks, unsigned threads) const;
  Status run_task(Task& task, Scratch* scratch) const;
  std::string chunk_label(const Task& task) const;  // "nnp: tensor 'x', chunk k of n"

  struct Mapping;
  std::unique_ptr<Mapping> map_;  // open_file on a regular file (POSIX): the mapping of the file
  std::vector<uint8_t> owned_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint16_t version_minor_ = 0;
  std::vector<TensorInfo> tensors_;
  std::string metadata_;
  struct NameIndex;
  std::unique_ptr<NameIndex> index_;
};

// Converts float32 to IEEE half / bfloat16 bits with round-to-nearest-even (NaN stays NaN).
uint16_t float_to_half_bits(float f);
uint16_t float_to_bfloat16_bits(float f);

#ifdef NNPRESS_WITH_ENCODER
// ---- writing (NNPRESS_ENCODER=ON) ----
struct TensorInput {
  std::string name;  // UTF-8, 1..65535 bytes, unique (UTF-8 is not checked here: see write_container)
  DType dtype = DType::kFloat32;
  TensorRole role = TensorRole::kWeight;
  Storage storage = Storage::kRaw;
  std::vector<uint64_t> shape;  // at most kMaxDims dimensions
  // kQuantized: product(shape) levels, a float dtype, step finite and > 0.
  const int32_t* levels = nullptr;
  QuantMethod method = QuantMethod::kNearest;
  double step = 0.0, lambda = 0.0;
  // Rows per chunk; 0 = derive from WriterOptions::block_elements as
  // max(1, min(rows, block_elements / cols)). Pass the value the quantizer priced with.
  uint64_t rows_per_block = 0;
  // Binarization parameters; both >= 0 fixes them (e.g. the ones the quantizer priced with),
  // -1 lets the writer choose (see WriterOptions::size_tolerance).
  int unary_len = -1, eg_order = -1;
  // Optional channel scale exponents (kQuantized only): rows / cols int8 values (rows, cols as in
  // rows_cols_of), scale 2^(e/8). Any non-null makes the entry storage code 3 and the file 1.1.
  const int8_t* row_scale_exp = nullptr;
  const int8_t* col_scale_exp = nullptr;
  // kRaw: product(shape) * dtype_size(dtype) bytes, little endian.
  const void* raw = nullptr;
  uint64_t raw_size = 0;
  // kAlias: index of an earlier, non-alias entry with the same dtype and shape.
  uint32_t alias_of = 0;
};

struct WriterOptions {
  uint64_t block_elements = uint64_t(1) << 18;  // target elements per row block (whole rows)
  unsigned threads = 0;                        // 0 = hardware_concurrency()
  // Binarization parameters per tensor (unless pinned in TensorInput):
  // choose_level_params_for_speed (level_coder.h) with this size tolerance — the fastest-decoding
  // pair whose measured size is within this fraction of the smallest; < 0: choose_level_params.
  double size_tolerance = 0.001;
  std::string metadata;                        // stored as is (UTF-8 JSON by convention)
  // Parse the assembled bytes with ContainerReader and check every CRC: write_container before
  // returning (for callers that replace a file with the bytes), ContainerFileWriter::finish on the
  // temporary file read back, before the rename. A failure keeps the reader's status code.
  bool verify = false;
};

// Bytes stored per input tensor (chunks only; the table adds a few dozen bytes per tensor).
struct WriteResult {
  std::vector<uint64_t> stored_bytes;
  uint64_t table_bytes = 0;
};

// Builds a complete .nnp file in *out (replacing its contents; unchanged when an input is refused).
// kInvalidArgument, naming the tensor, for any TensorInput that breaks the rules above (name size or
// duplicate, dtype, role, storage, more than 8 dimensions or an element count beyond 64 bits, raw
// size, step / lambda / method, rows_per_block > rows, null data, scales on a raw tensor or a
// step x scale that over/underflows, only one of unary_len/eg_order or out-of-range ones, a bad
// alias), for a null out, block_elements == 0, more than 2^32 - 1 tensors or metadata bytes.
// Not checked by the input rules, but rejected by every reader: names or metadata that are not valid
// UTF-8 and tensors beyond ReaderOptions' default limits; with WriterOptions::verify the writer reads
// its result back and returns the reader's status for such a file (nnpress.compress always does).
// All tensors are validated first, then every row block of every tensor is coded on one pool.
Status write_container(const std::vector<TensorInput>& tensors, const WriterOptions& options, std::vector<uint8_t>* out,
                       WriteResult* result = nullptr);

// Writes a .nnp file tensor by tensor, holding only the current tensor's coded chunks and the table
// entries in memory. The bytes are identical to write_container's for the same inputs in the same
// order and options (both run the same assembler; only where the bytes go differs).
//
//   ContainerFileWriter w;
//   Status s = w.open("model.nnp", options);       // creates ".model.nnp.<random>.tmp" next to it
//   for (...) if (s.ok()) s = w.add(tensor);       // codes the tensor's row blocks on options.threads
//   if (s.ok()) s = w.finish(&size);               // table, header, fsync, rename onto model.nnp
//   // on any failure (or if finish is never reached) the destructor removes the temporary file.
//
//   - open: the temporary file is created in the destination's folder with O_EXCL and mode
//     0666 & ~umask (as a plain open() would); a 40-byte header placeholder is written. kIo if the
//     folder is missing or not writable or the path is a folder; kInvalidArgument for an empty path
//     or one ending in '/', a writer already open, block_elements == 0 or metadata over 2^32 - 1
//     bytes.
//   - add: the TensorInput rules of write_container; an alias may refer only to a tensor added
//     before. An input refused with kInvalidArgument writes nothing and leaves the writer usable.
//     The input's arrays are read only during the call.
//   - finish: writes the table (tensor count, WriterOptions::metadata, the entries) and the real
//     header, then — with WriterOptions::verify — opens the complete temporary file with
//     ContainerReader (parsing the table, as any reader will) and checks every chunk's CRC-32C
//     against the bytes read back from the file; then fsync, rename onto the path (replacing an
//     existing file atomically) and fsync of the folder. *file_size (optional) gets the file's size,
//     *result (optional) the stored bytes per tensor and the table size.
//   - abort (and the destructor of a writer that was opened but not finished): closes and removes
//     the temporary file; an existing file at the path is never touched. Idempotent.
//   - Errors: every I/O failure (ENOSPC, EFBIG, EIO, a short write, fsync or rename failing) is a
//     kIo Status naming the destination path and the system's reason; the temporary file is then
//     removed and the writer is closed. add / finish after finish, abort or a failure are
//     kInvalidArgument ("not open"). A verify failure keeps the reader's status code.
//   - Not thread-safe: one thread at a time per writer (its coding still uses options.threads).
//   - POSIX only (open/write/fsync/rename); elsewhere open returns kUnsupported.
class ContainerFileWriter {
 public:
  ContainerFileWriter();
  ~ContainerFileWriter();  // abort() unless finished
  ContainerFileWriter(ContainerFileWriter&&) noexcept;
  ContainerFileWriter& operator=(ContainerFileWriter&&) noexcept;  // aborts the writer it replaces
  ContainerFileWriter(const ContainerFileWriter&) = delete;
  ContainerFileWriter& operator=(const ContainerFileWriter&) = delete;

  Status open(const std::string& path, const WriterOptions& options);
  Status add(const TensorInput& tensor);
  // Several tensors at once, in order: all are validated before anything is written (one refused
  // input refuses the batch), then the row blocks of all of them are coded on one pool — for many
  // small tensors, which one add() each would code one block at a time. Holds the batch's chunks.
  Status add(const std::vector<TensorInput>& tensors);
  Status finish(uint64_t* file_size = nullptr, WriteResult* result = nullptr);
  void abort();

  bool is_open() const;             // opened, not yet finished, aborted or failed
  size_t tensor_count() const;      // tensors added so far
  uint64_t bytes_written() const;   // bytes in the file so far (header placeholder + chunks; all after finish)
  const std::vector<uint64_t>& stored_bytes() const;  // chunk bytes per tensor added
  const std::string& temp_path() const;  // the temporary file while open, else empty

 private:
  Status add_batch(const TensorInput* tensors, size_t n);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
#endif

}  // namespace nnpress
