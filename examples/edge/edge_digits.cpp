// edge_digits — classify scikit-learn's 8x8 digits with the nnpress demo CNN, on CSER kernels, from
// a .nnp file, with nothing but the installed nnpress C++ library (no Python, no framework).
//
// Usage:
//   edge_digits MODEL.nnp IMAGES.f32 LABELS.i32 [EXPECTED.i32] [--threads N] [--repeat R] [--batch B] [--json]
//     IMAGES.f32    N x 64 float32 pixels in [0, 1], little endian (N = file size / 256)
//     LABELS.i32    N int32 labels 0..9
//     EXPECTED.i32  N int32 predictions of the Python model (nnpress.decompress + torch); when given,
//                   the program compares its predictions with them and exits 2 on any difference.
//     --threads N   threads for the decode (default 1); the kernels run on one thread
//     --repeat R    classify the test set R times and report the per-image latency over all runs
//     --batch B     classify B images per call (default 1: latency; B > 1: per-image time = call / B)
//     --json        one JSON line with the results (for bench/python/bench_edge.py)
//   Exit codes: 0 ok, 1 bad input or usage, 2 predictions differ from EXPECTED.
//
// The network (python/nnpress/demo_models.py, DigitsCNN), with x in [0, 1]:
//   x' = 2x - 1 -> conv 5x5 (1->6, pad 2) -> relu -> maxpool 2 -> conv 3x3 (6->16, pad 1) -> relu
//   -> flatten (c, h, w) -> fc 256->120 -> relu -> fc 120->84 -> relu -> fc 84->10 -> argmax
// Convolutions run as im2col + a CSER matrix product (images x output positions are the batch
// columns); fully connected layers as CSER products with the images as columns (batch 1: matvec). The shapes are
// checked against the file.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nnpress/runtime.h"
#include "nnpress/sparse/kernels.h"

namespace {

using nnpress::Status;
using nnpress::sparse::RowGroupMatrix;

struct Layer {
  RowGroupMatrix w;  // out x (in * kh * kw)
  std::vector<float> b;
};

struct Net {
  Layer conv1, conv2, fc1, fc2, fc3;
};

Status load_layer(const nnpress::Model& m, const std::string& name, const std::vector<uint64_t>& shape,
                  unsigned threads, Layer* out) {
  nnpress::TensorSummary s;
  Status st = m.summary(name + ".weight", &s);
  if (!st.ok()) return st;
  if (s.shape != shape) return nnpress::invalid_argument(name + ".weight: unexpected shape for the digits CNN");
  st = m.decode_matrix(name + ".weight", nnpress::sparse::Format::kCSER, &out->w, threads);
  if (!st.ok()) return st;
  st = m.decode_float32(name + ".bias", &out->b, threads);
  if (!st.ok()) return st;
  if (out->b.size() != shape[0]) return nnpress::invalid_argument(name + ".bias: unexpected size");
  return Status::Ok();
}

Status load_net(const nnpress::Model& m, unsigned threads, Net* net) {
  Status s = load_layer(m, "conv1", {6, 1, 5, 5}, threads, &net->conv1);
  if (s.ok()) s = load_layer(m, "conv2", {16, 6, 3, 3}, threads, &net->conv2);
  if (s.ok()) s = load_layer(m, "fc1", {120, 256}, threads, &net->fc1);
  if (s.ok()) s = load_layer(m, "fc2", {84, 120}, threads, &net->fc2);
  if (s.ok()) s = load_layer(m, "fc3", {10, 84}, threads, &net->fc3);
  return s;
}

// im2col for a square stride-1 convolution with zero padding, over a batch of B images: in is
// C x B x H x W (channel-major); cols is (C * k * k) x (B * H * W), row (c, i, j), column
// (b, y, x) = in[c][b][y + i - pad][x + j - pad] (0 outside).
void im2col(const float* in, int C, int B, int H, int W, int k, int pad, float* cols) {
  const size_t P = size_t(H) * W, N = size_t(B) * P;
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) {
        float* row = cols + size_t((c * k + i) * k + j) * N;
        for (int b = 0; b < B; ++b) {
          const float* img = in + (size_t(c) * B + b) * P;
          for (int y = 0; y < H; ++y) {
            const int yy = y + i - pad;
            for (int x = 0; x < W; ++x) {
              const int xx = x + j - pad;
              row[b * P + y * W + x] = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? img[yy * W + xx] : 0.0f;
            }
          }
        }
      }
}

// y is out x n (row-major): y[o][.] = relu(y[o][.] + b[o]).
void bias_relu(float* y, const std::vector<float>& b, size_t n) {
  for (size_t o = 0; o < b.size(); ++o)
    for (size_t p = 0; p < n; ++p) {
      const float v = y[o * n + p] + b[o];
      y[o * n + p] = v > 0.0f ? v : 0.0f;
    }
}

// Working memory for batches of up to `batch` images, allocated once.
struct Scratch {
  explicit Scratch(size_t batch)
      : x(64 * batch),
        cols1(25 * 64 * batch),
        y1(6 * 64 * batch),
        p1(6 * 16 * batch),
        cols2(54 * 16 * batch),
        y2(16 * 16 * batch),
        f(256 * batch),
        h1(120 * batch),
        h2(84 * batch),
        out(10 * batch) {}
  std::vector<float> x, cols1, y1, p1, cols2, y2, f, h1, h2, out;
};

// Classifies B images (B x 64 pixels) into labels[0 .. B). Every layer is one CSER product whose
// batch columns are the B images (times the output positions for the convolutions); B = 1 runs the
// matrix-vector kernels.
// W X for a fully connected layer: X is cols x B; B = 1 calls matvec directly.
Status product(const RowGroupMatrix& w, const float* x, size_t B, float* y) {
  const nnpress::sparse::KernelOptions ko;  // detected ISA, one thread
  if (B == 1) return nnpress::sparse::matvec(w, x, w.cols(), y, w.rows(), ko);
  return nnpress::sparse::matmat(w, x, size_t(w.cols()) * B, B, y, size_t(w.rows()) * B, ko);
}

Status classify(const Net& net, const float* pixels, size_t B, Scratch* s, int* labels) {
  const nnpress::sparse::KernelOptions ko;  // detected ISA, one thread
  const int b = int(B);
  for (size_t i = 0; i < 64 * B; ++i) s->x[i] = 2.0f * pixels[i] - 1.0f;  // C = 1: B x 64 is C x B x 64
  im2col(s->x.data(), 1, b, 8, 8, 5, 2, s->cols1.data());
  Status st = nnpress::sparse::matmat(net.conv1.w, s->cols1.data(), 25 * 64 * B, 64 * B, s->y1.data(), 6 * 64 * B, ko);
  if (!st.ok()) return st;
  bias_relu(s->y1.data(), net.conv1.b, 64 * B);
  for (size_t cb = 0; cb < 6 * B; ++cb)  // maxpool 2x2, stride 2: 8x8 -> 4x4, per (channel, image)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        const float* r0 = s->y1.data() + cb * 64 + (2 * y) * 8 + 2 * x;
        const float* r1 = r0 + 8;
        s->p1[cb * 16 + y * 4 + x] = std::max(std::max(r0[0], r0[1]), std::max(r1[0], r1[1]));
      }
  im2col(s->p1.data(), 6, b, 4, 4, 3, 1, s->cols2.data());
  st = nnpress::sparse::matmat(net.conv2.w, s->cols2.data(), 54 * 16 * B, 16 * B, s->y2.data(), 16 * 16 * B, ko);
  if (!st.ok()) return st;
  bias_relu(s->y2.data(), net.conv2.b, 16 * B);
  // Flatten per image in (c, h, w) order: feature c*16 + p of image i is y2[c][i][p]; f is 256 x B.
  for (size_t c = 0; c < 16; ++c)
    for (size_t i = 0; i < B; ++i)
      for (size_t p = 0; p < 16; ++p) s->f[(c * 16 + p) * B + i] = s->y2[(c * B + i) * 16 + p];
  st = product(net.fc1.w, s->f.data(), B, s->h1.data());
  if (!st.ok()) return st;
  bias_relu(s->h1.data(), net.fc1.b, B);
  st = product(net.fc2.w, s->h1.data(), B, s->h2.data());
  if (!st.ok()) return st;
  bias_relu(s->h2.data(), net.fc2.b, B);
  st = product(net.fc3.w, s->h2.data(), B, s->out.data());
  if (!st.ok()) return st;
  for (size_t i = 0; i < B; ++i) {
    int best = 0;
    float best_v = 0.0f;
    for (int k = 0; k < 10; ++k) {
      const float v = s->out[size_t(k) * B + i] + net.fc3.b[k];
      if (k == 0 || v > best_v) {  // first maximum, as torch.argmax
        best = k;
        best_v = v;
      }
    }
    labels[i] = best;
  }
  return Status::Ok();
}

bool read_file(const std::string& path, std::vector<uint8_t>* out) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  out->clear();
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->insert(out->end(), buf, buf + n);
  const bool ok = !std::ferror(f);
  std::fclose(f);
  return ok;
}

template <typename T>
bool read_array(const std::string& path, std::vector<T>* out) {
  std::vector<uint8_t> bytes;
  if (!read_file(path, &bytes) || bytes.size() % sizeof(T) != 0) return false;
  out->resize(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(out->data(), bytes.data(), bytes.size());
  return true;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int usage() {
  std::fprintf(stderr,
               "usage: edge_digits MODEL.nnp IMAGES.f32 LABELS.i32 [EXPECTED.i32] [--threads N] [--repeat R] "
               "[--batch B] [--json]\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  unsigned threads = 1;
  int repeat = 1;
  size_t batch = 1;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = unsigned(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--batch" && i + 1 < argc) {
      batch = size_t(std::max(1L, std::strtol(argv[++i], nullptr, 10)));
    } else if (a == "--json") {
      json = true;
    } else if (!a.empty() && a[0] == '-') {
      return usage();
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() < 3 || pos.size() > 4) return usage();

  // Load: open + decode + build the CSER layers.
  const auto t_load = std::chrono::steady_clock::now();
  nnpress::Model model;
  Status st = nnpress::Model::open_file(pos[0], &model);
  Net net;
  if (st.ok()) st = load_net(model, threads, &net);
  const double load_s = seconds_since(t_load);
  if (!st.ok()) {
    std::fprintf(stderr, "edge_digits: %s\n", st.message().c_str());
    return 1;
  }

  std::vector<float> images;
  std::vector<int32_t> labels, expected;
  if (!read_array(pos[1], &images) || images.size() % 64 != 0) {
    std::fprintf(stderr, "edge_digits: cannot read %s as N x 64 float32\n", pos[1].c_str());
    return 1;
  }
  const size_t n = images.size() / 64;
  if (!read_array(pos[2], &labels) || labels.size() != n) {
    std::fprintf(stderr, "edge_digits: %s must hold %zu int32 labels\n", pos[2].c_str(), n);
    return 1;
  }
  if (pos.size() == 4 && (!read_array(pos[3], &expected) || expected.size() != n)) {
    std::fprintf(stderr, "edge_digits: %s must hold %zu int32 predictions\n", pos[3].c_str(), n);
    return 1;
  }

  const size_t B = std::max<size_t>(1, std::min(batch, n));
  Scratch scratch(B);
  std::vector<int> pred(n);
  std::vector<double> lat;  // seconds per image (batch time / batch size), over all repeats
  lat.reserve(n * size_t(repeat));
  for (int r = 0; r < repeat; ++r) {
    for (size_t i = 0; i < n; i += B) {
      const size_t b = std::min(B, n - i);
      const auto t0 = std::chrono::steady_clock::now();
      st = classify(net, images.data() + 64 * i, b, &scratch, &pred[i]);
      const double per_image = seconds_since(t0) / double(b);
      for (size_t k = 0; k < b; ++k) lat.push_back(per_image);
      if (!st.ok()) {
        std::fprintf(stderr, "edge_digits: %s\n", st.message().c_str());
        return 1;
      }
    }
  }
  size_t correct = 0, agree = 0;
  for (size_t i = 0; i < n; ++i) {
    correct += pred[i] == labels[i];
    if (!expected.empty()) agree += pred[i] == expected[i];
  }
  std::vector<double> sorted = lat;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0;
  for (double v : lat) mean += v;
  mean /= double(std::max<size_t>(1, lat.size()));
  const double median = sorted.empty() ? 0 : sorted[sorted.size() / 2];
  const double p90 = sorted.empty() ? 0 : sorted[std::min(sorted.size() - 1, sorted.size() * 9 / 10)];
  const double acc = n ? double(correct) / double(n) : 0.0;

  if (json) {
    std::printf(
        "{\"images\": %zu, \"correct\": %zu, \"accuracy\": %.6f, \"agree\": %zu, \"expected_given\": %s, "
        "\"load_s\": %.6f, \"latency_median_us\": %.3f, \"latency_mean_us\": %.3f, \"latency_p90_us\": %.3f, "
        "\"repeat\": %d, \"batch\": %zu, \"model_bytes\": %zu, \"isa\": \"%s\"}\n",
        n, correct, acc, agree, expected.empty() ? "false" : "true", load_s, median * 1e6, mean * 1e6, p90 * 1e6,
        repeat, B, model.file_size(), nnpress::isa_name(nnpress::detect_isa()));
  } else {
    std::printf("model      %s: %zu bytes, %zu tensors, loaded (decode + CSER build) in %.3f ms\n", pos[0].c_str(),
                model.file_size(), model.tensor_count(), load_s * 1e3);
    std::printf("kernels    CSER, %s, 1 thread, batch %zu\n", nnpress::isa_name(nnpress::detect_isa()), B);
    std::printf("accuracy   %.6f (%zu / %zu)\n", acc, correct, n);
    std::printf("latency    median %.2f us, mean %.2f us, p90 %.2f us per image (%zu runs)\n", median * 1e6, mean * 1e6,
                p90 * 1e6, lat.size());
    if (!expected.empty()) std::printf("python     predictions identical: %zu / %zu\n", agree, n);
  }
  if (!expected.empty() && agree != n) {
    std::fprintf(stderr, "edge_digits: %zu predictions differ from the Python model's\n", n - agree);
    return 2;
  }
  return 0;
}
