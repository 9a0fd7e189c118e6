// edge_digits — classify scikit-learn's 8x8 digits with the nnpress demo CNN, on CSER kernels, from
// a .nnp file, with nothing but the installed nnpress C++ library (no Python, no framework).
//
// Usage:
//   edge_digits MODEL.nnp IMAGES.f32 LABELS.i32 [EXPECTED.i32] [--threads N] [--repeat R] [--json]
//     IMAGES.f32    N x 64 float32 pixels in [0, 1], little endian (N = file size / 256)
//     LABELS.i32    N int32 labels 0..9
//     EXPECTED.i32  N int32 predictions of the Python model (nnpress.decompress + torch); when given,
//                   the program compares its predictions with them and exits 2 on any difference.
//     --threads N   threads for the decode (default 1); the kernels run on one thread
//     --repeat R    classify the test set R times and report the per-image latency over all runs
//     --json        one JSON line with the results (for bench/python/bench_edge.py)
//   Exit codes: 0 ok, 1 bad input or usage, 2 predictions differ from EXPECTED.
//
// The network (python/nnpress/demo_models.py, DigitsCNN), with x in [0, 1]:
//   x' = 2x - 1 -> conv 5x5 (1->6, pad 2) -> relu -> maxpool 2 -> conv 3x3 (6->16, pad 1) -> relu
//   -> flatten (c, h, w) -> fc 256->120 -> relu -> fc 120->84 -> relu -> fc 84->10 -> argmax
// Convolutions run as im2col + a CSER matrix product (output positions are the batch columns);
// fully connected layers as CSER matrix-vector products. The shapes are checked against the file.
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

// im2col for a square stride-1 convolution with zero padding: in is C x H x W; cols is
// (C * k * k) x (H * W), row (c, i, j), column (y, x) = in[c][y + i - pad][x + j - pad].
void im2col(const float* in, int C, int H, int W, int k, int pad, float* cols) {
  const int P = H * W;
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) {
        float* row = cols + size_t((c * k + i) * k + j) * P;
        for (int y = 0; y < H; ++y) {
          const int yy = y + i - pad;
          for (int x = 0; x < W; ++x) {
            const int xx = x + j - pad;
            row[y * W + x] = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? in[(c * H + yy) * W + xx] : 0.0f;
          }
        }
      }
}

void bias_relu(float* y, const std::vector<float>& b, size_t per_channel) {
  for (size_t o = 0; o < b.size(); ++o)
    for (size_t p = 0; p < per_channel; ++p) {
      const float v = y[o * per_channel + p] + b[o];
      y[o * per_channel + p] = v > 0.0f ? v : 0.0f;
    }
}

// Working memory, allocated once.
struct Scratch {
  float x[64], cols1[25 * 64], y1[6 * 64], p1[6 * 16], cols2[54 * 16], y2[16 * 16], h1[120], h2[84], out[10];
};

Status classify(const Net& net, const float* pixels, Scratch* s, int* label) {
  const nnpress::sparse::KernelOptions ko;  // detected ISA, one thread
  for (int i = 0; i < 64; ++i) s->x[i] = 2.0f * pixels[i] - 1.0f;
  im2col(s->x, 1, 8, 8, 5, 2, s->cols1);
  Status st = nnpress::sparse::matmat(net.conv1.w, s->cols1, 25 * 64, 64, s->y1, 6 * 64, ko);
  if (!st.ok()) return st;
  bias_relu(s->y1, net.conv1.b, 64);
  for (int c = 0; c < 6; ++c)  // maxpool 2x2, stride 2: 8x8 -> 4x4
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        const float* r0 = s->y1 + c * 64 + (2 * y) * 8 + 2 * x;
        const float* r1 = r0 + 8;
        s->p1[c * 16 + y * 4 + x] = std::max(std::max(r0[0], r0[1]), std::max(r1[0], r1[1]));
      }
  im2col(s->p1, 6, 4, 4, 3, 1, s->cols2);
  st = nnpress::sparse::matmat(net.conv2.w, s->cols2, 54 * 16, 16, s->y2, 16 * 16, ko);
  if (!st.ok()) return st;
  bias_relu(s->y2, net.conv2.b, 16);  // y2 is 16 x (4*4): already the (c, h, w) flattening
  st = nnpress::sparse::matvec(net.fc1.w, s->y2, 256, s->h1, 120, ko);
  if (!st.ok()) return st;
  bias_relu(s->h1, net.fc1.b, 1);
  st = nnpress::sparse::matvec(net.fc2.w, s->h1, 120, s->h2, 84, ko);
  if (!st.ok()) return st;
  bias_relu(s->h2, net.fc2.b, 1);
  st = nnpress::sparse::matvec(net.fc3.w, s->h2, 84, s->out, 10, ko);
  if (!st.ok()) return st;
  int best = 0;
  for (int k = 0; k < 10; ++k) {
    s->out[k] += net.fc3.b[k];
    if (s->out[k] > s->out[best]) best = k;  // first maximum, as torch.argmax
  }
  *label = best;
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
               "[--json]\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  unsigned threads = 1;
  int repeat = 1;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = unsigned(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
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

  Scratch scratch;
  std::vector<int> pred(n);
  std::vector<double> lat;  // seconds per image, over all repeats
  lat.reserve(n * size_t(repeat));
  for (int r = 0; r < repeat; ++r) {
    for (size_t i = 0; i < n; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      st = classify(net, images.data() + 64 * i, &scratch, &pred[i]);
      lat.push_back(seconds_since(t0));
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
        "\"repeat\": %d, \"model_bytes\": %zu, \"isa\": \"%s\"}\n",
        n, correct, acc, agree, expected.empty() ? "false" : "true", load_s, median * 1e6, mean * 1e6, p90 * 1e6,
        repeat, model.file_size(), nnpress::isa_name(nnpress::detect_isa()));
  } else {
    std::printf("model      %s: %zu bytes, %zu tensors, loaded (decode + CSER build) in %.3f ms\n", pos[0].c_str(),
                model.file_size(), model.tensor_count(), load_s * 1e3);
    std::printf("kernels    CSER, %s, 1 thread, batch 1\n", nnpress::isa_name(nnpress::detect_isa()));
    std::printf("accuracy   %.6f (%zu / %zu)\n", acc, correct, n);
    std::printf("latency    median %.2f us, mean %.2f us, p90 %.2f us per image (%zu runs)\n", median * 1e6,
                mean * 1e6, p90 * 1e6, lat.size());
    if (!expected.empty()) std::printf("python     predictions identical: %zu / %zu\n", agree, n);
  }
  if (!expected.empty() && agree != n) {
    std::fprintf(stderr, "edge_digits: %zu predictions differ from the Python model's\n", n - agree);
    return 2;
  }
  return 0;
}
