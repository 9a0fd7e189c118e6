// Files on disk: the streaming writer (ContainerFileWriter) gives write_container's bytes, removes its
// temporary file on abort, destruction and I/O errors (and keeps an existing destination); the
// mapped reader (ContainerReader::open_file) decodes what the memory reader decodes, reads only the
// header, the table and the chunks it decodes, reports a file that shrank, and a corrupt chunk
// fails only its own tensor.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"
#include "nnpress/runtime.h"

using namespace nnpress;

static std::string g_dir;  // a fresh folder for this run's files

static std::vector<uint8_t> read_file(const std::string& path) {
  std::vector<uint8_t> b;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return b;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + n);
  std::fclose(f);
  return b;
}

static void write_file(const std::string& path, const std::vector<uint8_t>& b) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  CHECK(f != nullptr);
  if (!f) return;
  CHECK(std::fwrite(b.data(), 1, b.size(), f) == b.size());
  std::fclose(f);
}

// Names in a folder other than . and ..
static std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) return names;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  return names;
}

static bool has_temp_files(const std::string& dir) {
  for (const std::string& n : list_dir(dir))
    if (n.size() > 4 && n[0] == '.' && n.compare(n.size() - 4, 4, ".tmp") == 0) return true;
  return false;
}

static std::vector<int32_t> laplacian(size_t n, double scale, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> e(1.0 / scale);
  std::bernoulli_distribution coin(0.5);
  std::vector<int32_t> v(n);
  for (auto& x : v) {
    const int32_t m = int32_t(std::round(e(rng)));
    x = coin(rng) ? -m : m;
  }
  return v;
}

// Raw, quantized over several chunks, trellis, channel scales, a scalar, an empty tensor and two
// aliases (one of a raw tensor).
struct Mix {
  std::vector<int32_t> big, small, scaled, scalar;
  std::vector<int8_t> row_exp, col_exp;
  std::vector<float> bias;
  std::vector<int64_t> counter;
  std::vector<TensorInput> inputs;
};

static Mix make_mix() {
  Mix m;
  m.big = laplacian(300 * 130, 3.0, 1);
  m.small = laplacian(7 * 5, 1.0, 2);
  m.scaled = laplacian(40 * 24, 2.0, 3);
  m.scalar = {-3};
  for (int i = 0; i < 40; ++i) m.row_exp.push_back(int8_t(i % 7 - 3));
  for (int j = 0; j < 24; ++j) m.col_exp.push_back(int8_t(2 - j % 5));
  m.bias = {0.5f, -1.25f, 3.0f};
  m.counter = {42, -7};
  TensorInput t;
  t.name = "layer.0.weight";
  t.storage = Storage::kQuantized;
  t.shape = {300, 130};
  t.levels = m.big.data();
  t.step = 0.01;
  t.lambda = 0.25;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "layer.0.bias";
  t.role = TensorRole::kBias;
  t.shape = {3};
  t.raw = m.bias.data();
  t.raw_size = 12;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "conv.w";
  t.dtype = DType::kFloat16;
  t.storage = Storage::kQuantized;
  t.method = QuantMethod::kTrellis;
  t.shape = {7, 1, 5};
  t.levels = m.small.data();
  t.step = 0.125;
  t.unary_len = 3;
  t.eg_order = 1;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "attn.q";
  t.dtype = DType::kBFloat16;
  t.storage = Storage::kQuantized;
  t.shape = {40, 24};
  t.levels = m.scaled.data();
  t.step = 0.02;
  t.rows_per_block = 16;
  t.row_scale_exp = m.row_exp.data();
  t.col_scale_exp = m.col_exp.data();
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "scale";
  t.dtype = DType::kFloat64;
  t.storage = Storage::kQuantized;
  t.shape = {};
  t.levels = m.scalar.data();
  t.step = 0.3;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "empty";
  t.storage = Storage::kQuantized;
  t.shape = {0, 4};
  t.step = 1.0;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "steps";
  t.dtype = DType::kInt64;
  t.role = TensorRole::kBuffer;
  t.shape = {2};
  t.raw = m.counter.data();
  t.raw_size = 16;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "head.weight";
  t.storage = Storage::kAlias;
  t.shape = {300, 130};
  t.alias_of = 0;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "head.bias";
  t.role = TensorRole::kBias;
  t.storage = Storage::kAlias;
  t.shape = {3};
  t.alias_of = 1;
  m.inputs.push_back(t);
  return m;
}

static WriterOptions options(unsigned threads) {
  WriterOptions o;
  o.block_elements = 4096;
  o.threads = threads;
  o.metadata = "{\"producer\": \"test\", \"caf\\u00e9\": 1}";
  return o;
}

static Status stream(const std::string& path, const std::vector<TensorInput>& inputs, const WriterOptions& o,
                     uint64_t* size = nullptr, WriteResult* res = nullptr) {
  ContainerFileWriter w;
  Status s = w.open(path, o);
  for (size_t i = 0; s.ok() && i < inputs.size(); ++i) s = w.add(inputs[i]);
  if (s.ok()) s = w.finish(size, res);
  return s;
}

static void test_stream_equals_memory() {
  Mix m = make_mix();
  for (unsigned threads : {1u, 2u, 5u}) {
    for (bool verify : {false, true}) {
      WriterOptions o = options(threads);
      o.verify = verify;
      std::vector<uint8_t> mem;
      WriteResult mres;
      CHECK(write_container(m.inputs, o, &mem, &mres).ok());
      const std::string path = g_dir + "/mix.nnp";
      uint64_t size = 0;
      WriteResult fres;
      Status s = stream(path, m.inputs, o, &size, &fres);
      CHECK(s.ok());
      if (!s.ok()) std::fprintf(stderr, "%s\n", s.message().c_str());
      CHECK(read_file(path) == mem);
      CHECK(size == mem.size());
      CHECK(fres.stored_bytes == mres.stored_bytes);
      CHECK(fres.table_bytes == mres.table_bytes);
      CHECK(!has_temp_files(g_dir));
    }
  }
  // Added in batches (all at once, or a few at a time): the same bytes.
  {
    std::vector<uint8_t> mem;
    CHECK(write_container(m.inputs, options(2), &mem).ok());
    const std::string path = g_dir + "/mix.nnp";
    ContainerFileWriter w;
    CHECK(w.open(path, options(2)).ok());
    CHECK(w.add(std::vector<TensorInput>(m.inputs.begin(), m.inputs.begin() + 3)).ok());
    const uint64_t before = w.bytes_written();
    std::vector<TensorInput> bad(m.inputs.begin() + 3, m.inputs.end());
    bad.back().alias_of = 8;  // itself: refused, and with it the whole batch
    CHECK(w.add(bad).code() == StatusCode::kInvalidArgument);
    CHECK(w.tensor_count() == 3 && w.bytes_written() == before);
    CHECK(w.add(m.inputs[3]).ok());
    CHECK(w.add(std::vector<TensorInput>(m.inputs.begin() + 4, m.inputs.end())).ok());
    CHECK(w.finish().ok());
    CHECK(read_file(path) == mem);
  }
  // Without channel scales the file is 1.0, with them 1.1, as write_container stamps it.
  std::vector<TensorInput> plain = {m.inputs[0], m.inputs[1]};
  std::vector<uint8_t> mem;
  CHECK(write_container(plain, options(2), &mem).ok());
  CHECK(stream(g_dir + "/plain.nnp", plain, options(2)).ok());
  CHECK(read_file(g_dir + "/plain.nnp") == mem);
  CHECK(mem[10] == 0);
  // No tensors at all.
  CHECK(write_container({}, options(1), &mem).ok());
  CHECK(stream(g_dir + "/none.nnp", {}, options(1)).ok());
  CHECK(read_file(g_dir + "/none.nnp") == mem);
}

static void test_counters_and_state() {
  Mix m = make_mix();
  const std::string path = g_dir + "/state.nnp";
  ContainerFileWriter w;
  CHECK(!w.is_open());
  CHECK(w.add(m.inputs[0]).code() == StatusCode::kInvalidArgument);  // not opened
  CHECK(w.open(path, options(2)).ok());
  CHECK(w.is_open());
  CHECK(w.open(path, options(2)).code() == StatusCode::kInvalidArgument);  // already open
  CHECK(w.bytes_written() == kContainerHeaderSize);
  CHECK(!w.temp_path().empty());
  struct stat st;
  CHECK(stat(w.temp_path().c_str(), &st) == 0);
  const mode_t mask = umask(0);
  umask(mask);
  CHECK((st.st_mode & 0777) == (0666 & ~mask));  // a plain file's mode, not mkstemp's 0600
  CHECK(w.add(m.inputs[1]).ok());
  CHECK(w.tensor_count() == 1);
  CHECK(w.bytes_written() == kContainerHeaderSize + 12);
  CHECK(w.stored_bytes() == std::vector<uint64_t>{12});
  // A refused input (duplicate name, alias of a later tensor) writes nothing; the writer goes on.
  Status s = w.add(m.inputs[1]);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("duplicate name") != std::string::npos);
  TensorInput bad = m.inputs[7];
  bad.alias_of = 5;
  CHECK(w.add(bad).code() == StatusCode::kInvalidArgument);
  CHECK(w.tensor_count() == 1);
  CHECK(w.bytes_written() == kContainerHeaderSize + 12);
  CHECK(w.is_open());
  uint64_t size = 0;
  CHECK(w.finish(&size).ok());
  CHECK(w.bytes_written() == size);
  CHECK(w.temp_path().empty());
  std::vector<uint8_t> mem;
  CHECK(write_container({m.inputs[1]}, options(2), &mem).ok());
  CHECK(read_file(path) == mem);
  // Finishing twice, adding after finish, aborting after finish (harmless: the file stays).
  s = w.finish();
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("already finished") != std::string::npos);
  CHECK(w.add(m.inputs[2]).code() == StatusCode::kInvalidArgument);
  w.abort();
  CHECK(read_file(path) == mem);
  // Bad options and paths.
  ContainerFileWriter w2;
  WriterOptions zero = options(1);
  zero.block_elements = 0;
  CHECK(w2.open(g_dir + "/x.nnp", zero).code() == StatusCode::kInvalidArgument);
  CHECK(w2.open("", options(1)).code() == StatusCode::kInvalidArgument);
  CHECK(w2.open(g_dir + "/", options(1)).code() == StatusCode::kInvalidArgument);
  s = w2.open(g_dir, options(1));  // an existing folder
  CHECK(s.code() == StatusCode::kIo);
  CHECK(s.message().find("folder") != std::string::npos);
  s = w2.open(g_dir + "/no/such/folder/x.nnp", options(1));
  CHECK(s.code() == StatusCode::kIo);
  CHECK(s.message().find("no/such/folder/x.nnp") != std::string::npos);
  CHECK(!w2.is_open());
}

static void test_abort_keeps_old_file() {
  Mix m = make_mix();
  const std::string path = g_dir + "/keep.nnp";
  const std::vector<uint8_t> old = {'o', 'l', 'd'};
  write_file(path, old);
  {
    ContainerFileWriter w;
    CHECK(w.open(path, options(2)).ok());
    CHECK(w.add(m.inputs[0]).ok());
    CHECK(has_temp_files(g_dir));
    w.abort();
    CHECK(!has_temp_files(g_dir));
    CHECK(!w.is_open());
    Status s = w.finish();
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("aborted") != std::string::npos);
    w.abort();  // idempotent
  }
  CHECK(read_file(path) == old);
  {
    ContainerFileWriter w;  // destroyed without finish
    CHECK(w.open(path, options(2)).ok());
    CHECK(w.add(m.inputs[0]).ok());
    CHECK(w.add(m.inputs[1]).ok());
    CHECK(has_temp_files(g_dir));
  }
  CHECK(!has_temp_files(g_dir));
  CHECK(read_file(path) == old);
  {
    ContainerFileWriter a, b;
    CHECK(a.open(path, options(1)).ok());
    CHECK(b.open(g_dir + "/other.nnp", options(1)).ok());
    a = std::move(b);  // the replaced writer is aborted
    CHECK(a.is_open());
    CHECK(a.finish().ok());
  }
  CHECK(!has_temp_files(g_dir));
  CHECK(read_file(path) == old);
}

// The file-size limit makes write() fail with EFBIG part way through: the error names the path and
// the temporary file is gone. Run in a child so the limit does not touch the other tests.
static void test_write_error_removes_temp() {
  const std::string dir = g_dir + "/fsize";
  CHECK(mkdir(dir.c_str(), 0777) == 0);
  const std::string path = dir + "/big.nnp";
  write_file(path, {'o', 'l', 'd'});
  std::fflush(nullptr);
  const pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max = 100000;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(10);
    std::vector<uint8_t> data(1 << 20, 7);
    std::vector<int32_t> levels = laplacian(1 << 18, 40.0, 9);
    TensorInput small, raw, q;
    small.name = "small";
    small.dtype = DType::kUInt8;
    small.shape = {1000};
    small.raw = data.data();
    small.raw_size = 1000;
    raw = small;
    raw.name = "raw";
    raw.shape = {data.size()};
    raw.raw_size = data.size();
    q.name = "q";
    q.storage = Storage::kQuantized;
    q.shape = {512, 512};
    q.levels = levels.data();
    q.step = 0.01;
    int code = 0;
    for (int which = 0; which < 2 && code == 0; ++which) {
      ContainerFileWriter w;
      if (!w.open(path, options(2)).ok()) code = 11;
      if (code == 0 && !w.add(small).ok()) code = 12;
      Status s = code ? Status::Ok() : w.add(which == 0 ? raw : q);
      if (code == 0 && s.code() != StatusCode::kIo) code = 13;
      if (code == 0 && s.message().find(path) == std::string::npos) code = 14;
      if (code == 0 && s.message().find("too large") == std::string::npos) code = 15;  // EFBIG's text
      if (code == 0 && w.is_open()) code = 16;
      if (code == 0 && has_temp_files(dir)) code = 17;
      if (code == 0 && w.finish().code() != StatusCode::kInvalidArgument) code = 18;
      if (code == 0 && read_file(path) != std::vector<uint8_t>{'o', 'l', 'd'}) code = 19;
      if (code) std::fprintf(stderr, "write error case %d: %s\n", which, s.message().c_str());
    }
    std::fflush(nullptr);
    _exit(code);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) std::fprintf(stderr, "child exit code %d\n", WEXITSTATUS(status));
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(list_dir(dir) == std::vector<std::string>{"big.nnp"});
}

// The folder vanishes while the file is being written: finish cannot rename, reports it, and
// leaves nothing behind.
static void test_folder_removed() {
  Mix m = make_mix();
  const std::string dir = g_dir + "/gone";
  CHECK(mkdir(dir.c_str(), 0777) == 0);
  ContainerFileWriter w;
  CHECK(w.open(dir + "/x.nnp", options(1)).ok());
  CHECK(w.add(m.inputs[1]).ok());
  CHECK(unlink(w.temp_path().c_str()) == 0);
  CHECK(rmdir(dir.c_str()) == 0);
  Status s = w.finish();
  CHECK(s.code() == StatusCode::kIo);
  CHECK(s.message().find(dir + "/x.nnp") != std::string::npos);
  CHECK(!w.is_open());
  struct stat st;
  CHECK(stat(dir.c_str(), &st) != 0);
}

// A verify failure (a name that is not UTF-8: the reader rejects it) keeps the reader's code and
// leaves no file.
static void test_verify_failure() {
  Mix m = make_mix();
  TensorInput t = m.inputs[1];
  t.name = "bad\xFF";
  WriterOptions o = options(1);
  o.verify = true;
  const std::string path = g_dir + "/verify.nnp";
  Status s = stream(path, {t}, o);
  CHECK(s.is_format_error());
  CHECK(!has_temp_files(g_dir));
  CHECK(read_file(path).empty());
  o.verify = false;
  CHECK(stream(path, {t}, o).ok());  // written as asked; no reader accepts it
  ContainerReader r;
  CHECK(ContainerReader::open_file(path, &r).is_format_error());
  unlink(path.c_str());
}

static bool same_decode(const ContainerReader& a, const ContainerReader& b) {
  bool same = a.tensor_count() == b.tensor_count() && a.metadata() == b.metadata();
  for (size_t i = 0; same && i < a.tensor_count(); ++i) {
    std::vector<uint8_t> x(a.tensor(i).output_bytes() + 1), y(b.tensor(i).output_bytes() + 1);
    same = a.decode(i, x.data(), x.size() - 1, 2).ok() && b.decode(i, y.data(), y.size() - 1, 1).ok() && x == y;
  }
  return same;
}

static void test_mapped_reader() {
  Mix m = make_mix();
  const std::string path = g_dir + "/mapped.nnp";
  CHECK(stream(path, m.inputs, options(2)).ok());
  const std::vector<uint8_t> bytes = read_file(path);
  ContainerReader mem, mapped;
  CHECK(ContainerReader::open_memory(bytes.data(), bytes.size(), &mem).ok());
  CHECK(ContainerReader::open_file(path, &mapped).ok());
  CHECK(mapped.file_size() == bytes.size());
  CHECK(same_decode(mem, mapped));
  CHECK(mapped.verify_checksums().ok());
  // decode_all over every tensor on several threads, and levels.
  std::vector<std::vector<uint8_t>> outs(mapped.tensor_count());
  std::vector<void*> ptrs;
  std::vector<size_t> sizes;
  for (size_t i = 0; i < outs.size(); ++i) {
    outs[i].resize(mapped.tensor(i).output_bytes());
    ptrs.push_back(outs[i].empty() ? nullptr : outs[i].data());
    sizes.push_back(outs[i].size());
  }
  CHECK(mapped.decode_all(ptrs, sizes, 3).ok());
  for (size_t i = 0; i < outs.size(); ++i) {
    std::vector<uint8_t> x(outs[i].size() + 1);
    CHECK(mem.decode(i, x.data(), outs[i].size(), 1).ok());
    x.pop_back();
    CHECK(x == outs[i]);
  }
  std::vector<int32_t> lv(300 * 130);
  CHECK(mapped.decode_levels(0, lv.data(), lv.size(), 2).ok());
  CHECK(lv == m.big);
  // The reader outlives a move, and the file's removal (the mapping keeps the old contents).
  ContainerReader moved = std::move(mapped);
  CHECK(unlink(path.c_str()) == 0);
  CHECK(same_decode(mem, moved));
  // The runtime opens through the same reader: random access by name.
  write_file(path, bytes);
  Model model;
  CHECK(Model::open_file(path, &model).ok());
  std::vector<float> v;
  CHECK(model.decode_float32("attn.q", &v, 2).ok());
  CHECK(v.size() == 40 * 24);
  // Not a file, a missing file, an empty file, a folder.
  ContainerReader r;
  CHECK(ContainerReader::open_file(g_dir + "/missing.nnp", &r).code() == StatusCode::kIo);
  CHECK(ContainerReader::open_file(g_dir, &r).code() == StatusCode::kIo);
  write_file(g_dir + "/empty.nnp", {});
  Status s = ContainerReader::open_file(g_dir + "/empty.nnp", &r);
  CHECK(s.code() == StatusCode::kTruncated);
  CHECK(s.message().find("empty.nnp") != std::string::npos);
  // A header claiming a table far larger than the file: rejected from the header alone.
  {
    std::vector<uint8_t> h(bytes.begin(), bytes.begin() + 40);
    for (int k = 0; k < 8; ++k) h[24 + k] = uint8_t((uint64_t(1) << 44) >> (8 * k));
    const uint32_t crc = crc32c(h.data(), 36);
    for (int k = 0; k < 4; ++k) h[36 + k] = uint8_t(crc >> (8 * k));
    write_file(g_dir + "/huge.nnp", h);
    s = ContainerReader::open_file(g_dir + "/huge.nnp", &r);
    CHECK(s.code() == StatusCode::kTruncated);
    CHECK(s.message().find("past the end") != std::string::npos);
    unlink((g_dir + "/huge.nnp").c_str());
  }
  // A pipe is read whole instead of mapped.
  int fds[2];
  CHECK(pipe(fds) == 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t w = write(fds[1], bytes.data() + off, bytes.size() - off);
      if (w <= 0) _exit(1);
      off += size_t(w);
    }
    _exit(0);
  }
  close(fds[1]);
  ContainerReader piped;
  CHECK(ContainerReader::open_file("/dev/fd/" + std::to_string(fds[0]), &piped).ok());
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(same_decode(mem, piped));
  unlink((g_dir + "/empty.nnp").c_str());
  unlink(path.c_str());
}

// One corrupt chunk: the file opens, every other tensor decodes, that tensor names its chunk.
static void test_corrupt_chunk_on_disk() {
  Mix m = make_mix();
  const std::string path = g_dir + "/corrupt.nnp";
  CHECK(stream(path, m.inputs, options(2)).ok());
  ContainerReader clean;
  CHECK(ContainerReader::open_file(path, &clean).ok());
  const ChunkRef& ch = clean.tensor(0).chunks[4];
  std::vector<uint8_t> bytes = read_file(path);
  bytes[size_t(ch.offset + ch.size / 2)] ^= 0x10;
  const std::string bad = g_dir + "/corrupt2.nnp";
  write_file(bad, bytes);
  ContainerReader r;
  CHECK(ContainerReader::open_file(bad, &r).ok());
  for (size_t i = 1; i < r.tensor_count(); ++i) {
    if (i == 7) continue;  // head.weight is an alias of the corrupt tensor
    std::vector<uint8_t> x(r.tensor(i).output_bytes() + 1), y(x.size());
    CHECK(r.decode(i, x.data(), x.size() - 1, 2).ok());
    CHECK(clean.decode(i, y.data(), y.size() - 1, 2).ok());
    CHECK(x == y);
  }
  std::vector<float> w(300 * 130);
  for (size_t i : {size_t(0), size_t(7)}) {
    Status s = r.decode(i, w.data(), w.size() * 4, 2);
    CHECK(s.code() == StatusCode::kCorrupt);
    CHECK(s.message().find("chunk 5 of 10") != std::string::npos);
    CHECK(s.message().find("checksum") != std::string::npos);
  }
  CHECK(r.verify_checksums().code() == StatusCode::kCorrupt);
  unlink(path.c_str());
  unlink(bad.c_str());
}

// A file truncated (or grown) after opening is reported before any page is touched.
static void test_file_changed_size() {
  Mix m = make_mix();
  const std::string path = g_dir + "/shrink.nnp";
  CHECK(stream(path, m.inputs, options(1)).ok());
  ContainerReader r;
  CHECK(ContainerReader::open_file(path, &r).ok());
  const uint64_t size = r.file_size();
  CHECK(truncate(path.c_str(), off_t(size / 2)) == 0);
  std::vector<float> w(300 * 130);
  Status s = r.decode(0, w.data(), w.size() * 4, 2);
  CHECK(s.code() == StatusCode::kIo);
  CHECK(s.message().find("changed size") != std::string::npos);
  CHECK(r.verify_checksums().code() == StatusCode::kIo);
  unlink(path.c_str());
}

// Which pages of a file are in the page cache (mincore over a separate mapping), per page.
static std::vector<unsigned char> resident_pages(const std::string& path, size_t size) {
  const int fd = open(path.c_str(), O_RDONLY);
  std::vector<unsigned char> v;
  if (fd < 0) return v;
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return v;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  v.resize((size + page - 1) / page);
  if (mincore(p, size, v.data()) != 0) v.clear();
  munmap(p, size);
  for (auto& c : v) c &= 1;
  return v;
}

static bool evict(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  fsync(fd);
  const bool ok = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
  close(fd);
  return ok;
}

static size_t count_in(const std::vector<unsigned char>& pages, uint64_t from, uint64_t to) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  size_t n = 0;
  for (uint64_t p = from / page; p < to / page && p < pages.size(); ++p) n += pages[size_t(p)];
  return n;
}

// Opening reads the header and the table only; decoding one tensor by name reads only its chunks. Checked
// through the page cache, so it is skipped where the cache cannot be emptied (tmpfs, some
// containers).
static void test_reads_only_what_it_needs() {
  const size_t mb = size_t(1) << 20;
  std::vector<uint8_t> a(8 * mb, 1), b(8 * mb, 2), c(8 * mb, 3);
  std::vector<TensorInput> in(3);
  const std::vector<uint8_t>* data[3] = {&a, &b, &c};
  for (int k = 0; k < 3; ++k) {
    in[k].name = std::string("t") + char('0' + k);
    in[k].dtype = DType::kUInt8;
    in[k].shape = {data[k]->size()};
    in[k].raw = data[k]->data();
    in[k].raw_size = data[k]->size();
  }
  const std::string path = g_dir + "/pages.nnp";
  CHECK(stream(path, in, options(1)).ok());
  const size_t size = read_file(path).size();
  if (!evict(path) || count_in(resident_pages(path, size), 0, size) > size / 4096 / 8) {
    std::printf("test_reads_only_what_it_needs: skipped (the page cache cannot be emptied here)\n");
    unlink(path.c_str());
    return;
  }
  Model model;  // the runtime, through the same reader
  CHECK(Model::open_file(path, &model).ok());
  const ContainerReader& r = model.reader();
  std::vector<unsigned char> pages = resident_pages(path, size);
  const uint64_t t0 = r.tensor(0).chunks[0].offset, t1 = r.tensor(1).chunks[0].offset;
  const uint64_t t2 = r.tensor(2).chunks[0].offset, table = t2 + 8 * mb;
  // Read-ahead around the header and the table may bring in a few hundred KB; the middle of the
  // data stays out.
  CHECK(count_in(pages, t0 + mb, table - mb) == 0);
  std::vector<uint8_t> out(8 * mb);
  CHECK(model.decode("t1", out.data(), out.size(), 2).ok());
  CHECK(out == b);
  pages = resident_pages(path, size);
  CHECK(count_in(pages, t0 + mb, t1 - mb) == 0);     // t0 untouched
  CHECK(count_in(pages, t2 + mb, table - mb) == 0);  // t2 untouched
  CHECK(count_in(pages, t1, t1 + 8 * mb) > 1000);    // t1 read
  unlink(path.c_str());
}

// Random models (every storage, dtype, shapes with empty and scalar tensors, row blocks, pinned and
// chosen level params, channel scales, aliases of earlier tensors, metadata): the streaming writer's
// file equals write_container's bytes, for 1 and 2 threads, and the two readers agree on it.
static void test_random_models_stream_equals_memory() {
  std::mt19937_64 rng(2024);
  const std::string path = g_dir + "/random.nnp";
  for (int round = 0; round < 40; ++round) {
    const size_t n = 1 + rng() % 8;
    std::vector<std::vector<int32_t>> levels(n);
    std::vector<std::vector<uint8_t>> raws(n);
    std::vector<std::vector<int8_t>> rexp(n), cexp(n);
    std::vector<TensorInput> in(n);
    for (size_t i = 0; i < n; ++i) {
      TensorInput& t = in[i];
      t.name = "t" + std::to_string(i) + (rng() % 2 ? ".weight" : "");
      const unsigned ndim = unsigned(rng() % 4);
      for (unsigned d = 0; d < ndim; ++d) t.shape.push_back(rng() % 9 == 0 ? 0 : 1 + rng() % 40);
      uint64_t count = 1, rows = 0, cols = 0;
      for (uint64_t d : t.shape) count *= d;
      rows_cols_of(t.shape, &rows, &cols);
      const unsigned kind = unsigned(rng() % 4);
      if (kind == 3 && i > 0) {  // alias of an earlier non-alias tensor: take its dtype and shape
        size_t target = rng() % i;
        while (in[target].storage == Storage::kAlias) target = rng() % i;  // tensor 0 is never an alias
        t.storage = Storage::kAlias;
        t.alias_of = uint32_t(target);
        t.dtype = in[target].dtype;
        t.shape = in[target].shape;
      } else if (kind == 0) {
        t.storage = Storage::kRaw;
        t.dtype = DType(1 + rng() % 13);
        raws[i].resize(size_t(count * dtype_size(t.dtype)));
        for (auto& b : raws[i]) b = uint8_t(rng());
        t.raw = raws[i].data();
        t.raw_size = raws[i].size();
      } else {
        t.storage = Storage::kQuantized;
        t.dtype = DType(1 + rng() % 4);
        t.method = QuantMethod(rng() % 3);
        t.step = 0.001 * double(1 + rng() % 1000);
        t.lambda = double(rng() % 5);
        levels[i] = laplacian(size_t(count), 0.5 + double(rng() % 20), uint32_t(rng()));
        t.levels = levels[i].data();
        if (rows && rng() % 2) t.rows_per_block = 1 + rng() % rows;
        if (rng() % 3 == 0) {
          t.unary_len = int(rng() % 8);
          t.eg_order = int(rng() % 4);
        }
        if (count && rng() % 3 == 0) {
          rexp[i].resize(size_t(rows));
          for (auto& e : rexp[i]) e = int8_t(int(rng() % 17) - 8);
          t.row_scale_exp = rexp[i].data();
        }
        if (count && rng() % 3 == 0) {
          cexp[i].resize(size_t(cols));
          for (auto& e : cexp[i]) e = int8_t(int(rng() % 17) - 8);
          t.col_scale_exp = cexp[i].data();
        }
      }
    }
    WriterOptions o = options(1 + unsigned(round % 2));
    o.block_elements = 1 + rng() % 600;
    if (round % 5 == 0) o.metadata.clear();
    std::vector<uint8_t> mem;
    WriteResult mres, fres;
    Status ms = write_container(in, o, &mem, &mres);
    CHECK(ms.ok());
    if (!ms.ok()) {
      std::fprintf(stderr, "round %d: %s\n", round, ms.message().c_str());
      continue;
    }
    CHECK(stream(path, in, o, nullptr, &fres).ok());
    const bool same = read_file(path) == mem;
    CHECK(same);
    if (!same) std::fprintf(stderr, "round %d: streamed bytes differ\n", round);
    CHECK(fres.stored_bytes == mres.stored_bytes);
    ContainerReader a, b;
    CHECK(ContainerReader::open_memory(mem.data(), mem.size(), &a).ok());
    CHECK(ContainerReader::open_file(path, &b).ok());
    CHECK(same_decode(a, b));
  }
  unlink(path.c_str());
}

// The process's resident file-backed memory in KiB (RssFile in /proc/self/status), -1 if unknown.
static long rss_file_kib() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "RssFile: %ld kB", &kib) == 1) break;
  std::fclose(f);
  return kib;
}

// Decoding a mapped file tensor by tensor gives each chunk's pages back: the file does not become
// resident in the process (Linux: measured with RssFile).
static void test_decoded_pages_released() {
  if (rss_file_kib() < 0) {
    std::printf("test_decoded_pages_released: skipped (no RssFile in /proc/self/status)\n");
    return;
  }
  const size_t mb = size_t(1) << 20;
  std::vector<std::vector<uint8_t>> data(4, std::vector<uint8_t>(6 * mb));
  std::vector<int32_t> levels = laplacian(1024 * 1024, 30.0, 8);
  std::vector<TensorInput> in(5);
  for (size_t k = 0; k < 4; ++k) {
    for (size_t i = 0; i < data[k].size(); i += 4096) data[k][i] = uint8_t(k + i);
    in[k].name = "raw" + std::to_string(k);
    in[k].dtype = DType::kUInt8;
    in[k].shape = {data[k].size()};
    in[k].raw = data[k].data();
    in[k].raw_size = data[k].size();
  }
  in[4].name = "q";
  in[4].storage = Storage::kQuantized;
  in[4].shape = {1024, 1024};
  in[4].levels = levels.data();
  in[4].step = 0.01;
  const std::string path = g_dir + "/rss.nnp";
  CHECK(stream(path, in, options(2)).ok());
  ContainerReader r;
  CHECK(ContainerReader::open_file(path, &r).ok());
  CHECK(r.file_size() > 24 * mb);
  std::vector<uint8_t> out(6 * mb);
  std::vector<float> q(1024 * 1024);
  const long before = rss_file_kib();
  for (size_t k = 0; k < 4; ++k) {
    CHECK(r.decode(k, out.data(), out.size(), k % 2 ? 1 : 2).ok());  // pieces on 1 and on 2 threads
    CHECK(out == data[k]);
  }
  CHECK(r.decode(4, q.data(), q.size() * 4, 2).ok());
  const long grown = rss_file_kib() - before;
  CHECK(grown < 4 * 1024);  // about 27 MB of the file were read
  if (grown >= 4 * 1024) std::fprintf(stderr, "RssFile grew by %ld KiB\n", grown);
  unlink(path.c_str());
}

// CRC-32C of pieces combined = CRC-32C of the whole, for every split point of some lengths.
static void test_crc_combine() {
  std::mt19937 rng(5);
  std::vector<uint8_t> buf(3000);
  for (auto& b : buf) b = uint8_t(rng());
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(64), size_t(1000), size_t(3000)}) {
    const uint32_t whole = crc32c(buf.data(), n);
    for (size_t cut = 0; cut <= n; cut += (n > 100 ? 37 : 1))
      CHECK(crc32c_combine(crc32c(buf.data(), cut), crc32c(buf.data() + cut, n - cut), n - cut) == whole);
  }
}

// A raw tensor larger than the piece size: copied in pieces on several threads, the CRC checked
// over all of them (a flipped byte in any piece is reported once, for the whole chunk).
static void test_large_raw_tensor() {
  std::vector<uint8_t> data((size_t(9) << 20) + 123);
  std::mt19937 rng(11);
  for (auto& b : data) b = uint8_t(rng());
  std::vector<TensorInput> in(2);
  in[0].name = "emb";
  in[0].dtype = DType::kUInt8;
  in[0].shape = {data.size()};
  in[0].raw = data.data();
  in[0].raw_size = data.size();
  std::vector<int32_t> levels = laplacian(64 * 64, 2.0, 4);
  in[1].name = "w";
  in[1].storage = Storage::kQuantized;
  in[1].shape = {64, 64};
  in[1].levels = levels.data();
  in[1].step = 0.5;
  const std::string path = g_dir + "/raw.nnp";
  std::vector<uint8_t> mem;
  CHECK(write_container(in, options(1), &mem).ok());
  CHECK(crc32c(mem.data() + 40, data.size()) == crc32c(data.data(), data.size()));
  CHECK(stream(path, in, options(3)).ok());
  CHECK(read_file(path) == mem);
  for (size_t at : {size_t(0), size_t(5) << 20, data.size() - 1}) {
    ContainerReader r;
    std::vector<uint8_t> bytes = mem;
    if (at != 0) bytes[40 + at] ^= 1;
    write_file(path, bytes);
    CHECK(ContainerReader::open_file(path, &r).ok());
    for (unsigned threads : {1u, 3u}) {
      std::vector<uint8_t> out(data.size());
      Status s = r.decode(0, out.data(), out.size(), threads);
      if (at == 0) {
        CHECK(s.ok());
        CHECK(out == data);
      } else {
        CHECK(s.code() == StatusCode::kCorrupt);
        CHECK(s.message().find("'emb', chunk 1 of 1: checksum mismatch") != std::string::npos);
      }
      std::vector<float> w(64 * 64);
      CHECK(r.decode(1, w.data(), w.size() * 4, threads).ok());
    }
  }
  unlink(path.c_str());
}

int main() {
  char tmpl[] = "nnp_stream_test_XXXXXX";
  const char* d = mkdtemp(tmpl);
  CHECK(d != nullptr);
  if (d == nullptr) return TEST_MAIN_RESULT();
  g_dir = d;
  test_stream_equals_memory();
  test_counters_and_state();
  test_abort_keeps_old_file();
  test_write_error_removes_temp();
  test_folder_removed();
  test_verify_failure();
  test_mapped_reader();
  test_corrupt_chunk_on_disk();
  test_file_changed_size();
  test_reads_only_what_it_needs();
  test_decoded_pages_released();
  test_crc_combine();
  test_random_models_stream_equals_memory();
  test_large_raw_tensor();
  // Clean up what the tests left (a failing test may leave files; the folder is then kept).
  for (const std::string& n :
       {"mix.nnp", "plain.nnp", "none.nnp", "state.nnp", "keep.nnp", "other.nnp", "fsize/big.nnp"})
    unlink((g_dir + "/" + n).c_str());
  rmdir((g_dir + "/fsize").c_str());
  rmdir(g_dir.c_str());
  return TEST_MAIN_RESULT();
}
