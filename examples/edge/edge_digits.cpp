// edge_digits — classify scikit-learn's 8x8 digits with the nnpress demo CNN, from a .nnp file, with
// nothing but the installed nnpress C++ library (no Python, no framework).
//
// Usage:
//   edge_digits MODEL.nnp IMAGES.f32 LABELS.i32 [EXPECTED.i32] [--threads N] [--repeat R] [--batch B]
//               [--format F | --formats conv1=F,fc1=F,...] [--json]
//     IMAGES.f32    N x 64 float32 pixels in [0, 1], little endian (N = file size / 256)
//     LABELS.i32    N int32 labels 0..9
//     EXPECTED.i32  N int32 predictions of the Python model (nnpress.decompress + torch); when given,
//                   the program compares its predictions with them and exits 2 on any difference.
//     --threads N   threads for the decode (default 1); the kernels run on one thread
//     --repeat R    classify the test set R times and report the per-image latency over all runs
//     --batch B     classify B images per call (default 1: latency; B > 1: per-image time = call / B)
//     --format F    every layer in format F (levels, cser, cer, codebook; default auto: each layer's
//                   format is the one measured fastest at load, nnpress/layer.h)
//     --formats L   per-layer formats, e.g. conv1=levels,conv2=levels,fc1=cser (others: --format)
//     --json        one JSON line with the results (for bench/python/bench_edge.py)
//   Exit codes: 0 ok, 1 bad input or usage, 2 predictions differ from EXPECTED.
//
// The network (python/nnpress/demo_models.py, DigitsCNN), with x in [0, 1]:
//   x' = 2x - 1 -> conv 5x5 (1->6, pad 2) -> relu -> maxpool 2 -> conv 3x3 (6->16, pad 1) -> relu
//   -> flatten (c, h, w) -> fc 256->120 -> relu -> fc 120->84 -> relu -> fc 84->10 -> argmax
// Every layer is an nnpress::Layer (bias and ReLU applied by the layer), created for the batch it runs
// with: output pixels x images for the convolutions (im2col), images for the fully connected layers.
// Each layer's format fixes the layout of its input and output (Layout::kItemRows: one row per item,
// the level kernels; kItemCols: one column per item, CER/CSER/codebook), and the glue between layers
// (im2col from zero-padded images, maxpool, flatten) reads and writes whichever layout the layers on
// either side use. All
// working memory is allocated once; a call allocates nothing. The shapes are checked against the file.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "nnpress/layer.h"
#include "nnpress/runtime.h"

namespace {

using nnpress::Layer;
using nnpress::Layout;
using nnpress::Status;

constexpr int kLayers = 5;
const char* const kNames[kLayers] = {"conv1", "conv2", "fc1", "fc2", "fc3"};

struct Net {
  Layer layer[kLayers];  // conv1, conv2, fc1, fc2, fc3
};

// Creates every layer for `batch` images: weight shapes as in the file, bias + ReLU inside (none on fc3).
Status load_net(const nnpress::Model& m, size_t batch, unsigned threads, const nnpress::LayerFormat* formats,
                Net* net) {
  const std::vector<uint64_t> shapes[kLayers] = {{6, 1, 5, 5}, {16, 6, 3, 3}, {120, 256}, {84, 120}, {10, 84}};
  const size_t items[kLayers] = {64 * batch, 16 * batch, batch, batch, batch};  // output pixels x images
  for (int l = 0; l < kLayers; ++l) {
    const std::string name = kNames[l];
    nnpress::TensorSummary s;
    Status st = m.summary(name + ".weight", &s);
    if (!st.ok()) return st;
    if (s.shape != shapes[l]) return nnpress::invalid_argument(name + ".weight: unexpected shape for the digits CNN");
    nnpress::LayerOptions o;
    o.format = formats[l];
    o.bias = name + ".bias";
    o.activation = l < kLayers - 1 ? nnpress::Activation::kRelu : nnpress::Activation::kNone;
    o.decode_threads = threads;
    st = Layer::create(m, name + ".weight", items[l], o, &net->layer[l]);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

// B images of C x H x W with a zero border of `pad` (C x (H + 2 pad) x (W + 2 pad) each): the producer
// writes the interior, the border stays zero (set once), so im2col below is plain row copies.
struct Padded {
  int C, H, W, pad, Hp, Wp;
  size_t img;  // floats per image
  std::vector<float> data;
  Padded(int c, int h, int w, int p, size_t batch)
      : C(c), H(h), W(w), pad(p), Hp(h + 2 * p), Wp(w + 2 * p), img(size_t(c) * Hp * Wp), data(img * batch, 0.0f) {}
  // Row y of channel c of image b (interior, x = 0 .. W-1).
  float* row(size_t b, int c, int y) {
    return data.data() + b * img + size_t(c) * Hp * Wp + size_t(y + pad) * Wp + pad;
  }
};

// im2col of a square stride-1 k x k convolution over B padded images: output position p = (y, x), column
// kk = (c, i, j) as the weight's flattening orders it, value = padded[c][y + i][x + j]; written as the
// product's X in `layout` (B*P items of K values).
void im2col(const Padded& in, int k, size_t B, Layout layout, float* out) {
  const int H = in.H, W = in.W, C = in.C, P = H * W, K = C * k * k;
  const size_t plane = size_t(in.Hp) * in.Wp;
  if (layout == Layout::kItemCols) {  // row kk: B*P values, one row of W per (image, y)
    const size_t n = B * size_t(P);
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j) {
          float* o = out + size_t((c * k + i) * k + j) * n;
          for (size_t b = 0; b < B; ++b) {
            const float* src = in.data.data() + b * in.img + c * plane + size_t(i) * in.Wp + j;
            for (int y = 0; y < H; ++y, o += W)
              for (int x = 0; x < W; ++x) o[x] = src[size_t(y) * in.Wp + x];
          }
        }
  } else {  // row (b, y, x): K values, k consecutive ones per (c, i)
    for (size_t b = 0; b < B; ++b)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          float* o = out + (b * P + size_t(y) * W + x) * K;
          for (int c = 0; c < C; ++c)
            for (int i = 0; i < k; ++i, o += k) {
              const float* src = in.data.data() + b * in.img + c * plane + size_t(y + i) * in.Wp + x;
              for (int j = 0; j < k; ++j) o[j] = src[j];
            }
        }
  }
}

// Strides of a layer's output Y (rows x items or items x rows): value (row r, item i) = Y[r * rs + i * is].
void out_strides(Layout layout, size_t rows, size_t items, size_t* rs, size_t* is) {
  if (layout == Layout::kItemRows) {
    *rs = 1;
    *is = rows;
  } else {
    *rs = items;
    *is = 1;
  }
}

// Working memory for batches of up to `batch` images, allocated once.
struct Scratch {
  explicit Scratch(size_t batch)
      : x(1, 8, 8, 2, batch),
        cols1(25 * 64 * batch),
        y1(6 * 64 * batch),
        p1(6, 4, 4, 1, batch),
        cols2(54 * 16 * batch),
        y2(16 * 16 * batch),
        f(256 * batch),
        h1(120 * batch),
        h2(84 * batch),
        t(120 * batch),
        out(10 * batch) {}
  Padded x;  // conv1's input
  std::vector<float> cols1, y1;
  Padded p1;  // conv2's input
  std::vector<float> cols2, y2, f, h1, h2, t, out;
};

// Rewrites the rows x B output of one layer (layout `from`) in the layout `to` the next layer reads; at
// B = 1 both layouts are the same memory. Returns the buffer holding the result.
float* relayout(float* y, size_t rows, size_t B, Layout from, Layout to, float* tmp) {
  if (from == to || B == 1) return y;
  size_t rs, is;
  out_strides(from, rows, B, &rs, &is);
  size_t trs, tis;
  out_strides(to, rows, B, &trs, &tis);
  for (size_t r = 0; r < rows; ++r)
    for (size_t i = 0; i < B; ++i) tmp[r * trs + i * tis] = y[r * rs + i * is];
  return tmp;
}

// Classifies B images (B x 64 pixels) into labels[0 .. B).
Status classify(const Net& net, const float* pixels, size_t B, Scratch* s, int* labels) {
  const Layer &conv1 = net.layer[0], &conv2 = net.layer[1], &fc1 = net.layer[2], &fc2 = net.layer[3],
              &fc3 = net.layer[4];
  for (size_t b = 0; b < B; ++b)  // x' = 2x - 1
    for (int y = 0; y < 8; ++y) {
      float* x = s->x.row(b, 0, y);
      for (int i = 0; i < 8; ++i) x[i] = 2.0f * pixels[64 * b + 8 * y + i] - 1.0f;
    }
  im2col(s->x, 5, B, conv1.layout(), s->cols1.data());
  Status st = conv1.forward(s->cols1.data(), 25 * 64 * B, 64 * B, s->y1.data(), 6 * 64 * B);
  if (!st.ok()) return st;
  // maxpool 2x2, stride 2: 8x8 -> 4x4 per (channel, image), into conv2's padded input.
  size_t rs, is;
  out_strides(conv1.layout(), 6, 64 * B, &rs, &is);
  for (size_t b = 0; b < B; ++b)
    for (int c = 0; c < 6; ++c) {
      const float* y = s->y1.data() + c * rs + b * 64 * is;
      for (int oy = 0; oy < 4; ++oy) {
        float* p = s->p1.row(b, c, oy);
        for (int ox = 0; ox < 4; ++ox) {
          const size_t q = size_t(2 * oy * 8 + 2 * ox);
          const float m0 = std::max(y[q * is], y[(q + 1) * is]), m1 = std::max(y[(q + 8) * is], y[(q + 9) * is]);
          p[ox] = std::max(m0, m1);
        }
      }
    }
  im2col(s->p1, 3, B, conv2.layout(), s->cols2.data());
  st = conv2.forward(s->cols2.data(), 54 * 16 * B, 16 * B, s->y2.data(), 16 * 16 * B);
  if (!st.ok()) return st;
  // Flatten per image in (c, h, w) order: feature c*16 + q of image b, in fc1's input layout.
  out_strides(conv2.layout(), 16, 16 * B, &rs, &is);
  size_t frs, fis;
  out_strides(fc1.layout(), 256, B, &frs, &fis);
  for (size_t b = 0; b < B; ++b)
    for (size_t c = 0; c < 16; ++c)
      for (size_t q = 0; q < 16; ++q) s->f[(c * 16 + q) * frs + b * fis] = s->y2[c * rs + (b * 16 + q) * is];
  st = fc1.forward(s->f.data(), 256 * B, B, s->h1.data(), 120 * B);
  if (!st.ok()) return st;
  const float* in2 = relayout(s->h1.data(), 120, B, fc1.layout(), fc2.layout(), s->t.data());
  st = fc2.forward(in2, 120 * B, B, s->h2.data(), 84 * B);
  if (!st.ok()) return st;
  const float* in3 = relayout(s->h2.data(), 84, B, fc2.layout(), fc3.layout(), s->t.data());
  st = fc3.forward(in3, 84 * B, B, s->out.data(), 10 * B);
  if (!st.ok()) return st;
  out_strides(fc3.layout(), 10, B, &rs, &is);
  for (size_t i = 0; i < B; ++i) {
    int best = 0;
    float best_v = 0.0f;
    for (int k = 0; k < 10; ++k) {
      const float v = s->out[size_t(k) * rs + i * is];
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
               "[--batch B] [--format F | --formats conv1=F,...] [--json]\n");
  return 1;
}

// "conv1=levels,fc1=cser" into formats[]; false on an unknown layer or format.
bool parse_formats(const std::string& list, nnpress::LayerFormat* formats) {
  size_t at = 0;
  while (at <= list.size()) {
    const size_t end = std::min(list.find(',', at), list.size());
    const std::string item = list.substr(at, end - at);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return false;
    const std::string layer = item.substr(0, eq);
    int l = 0;
    while (l < kLayers && layer != kNames[l]) ++l;
    if (l == kLayers || !nnpress::parse_layer_format(item.substr(eq + 1), &formats[l])) return false;
    at = end + 1;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  unsigned threads = 1;
  int repeat = 1;
  size_t batch = 1;
  bool json = false;
  nnpress::LayerFormat formats[kLayers];
  std::fill(formats, formats + kLayers, nnpress::LayerFormat::kAuto);
  std::string per_layer;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = unsigned(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--batch" && i + 1 < argc) {
      batch = size_t(std::max(1L, std::strtol(argv[++i], nullptr, 10)));
    } else if (a == "--format" && i + 1 < argc) {
      nnpress::LayerFormat f;
      if (!nnpress::parse_layer_format(argv[++i], &f)) return usage();
      std::fill(formats, formats + kLayers, f);
    } else if (a == "--formats" && i + 1 < argc) {
      per_layer = argv[++i];
    } else if (a == "--json") {
      json = true;
    } else if (!a.empty() && a[0] == '-') {
      return usage();
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() < 3 || pos.size() > 4) return usage();
  if (!per_layer.empty() && !parse_formats(per_layer, formats)) return usage();

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

  // Load: open + decode + build every layer in the format measured fastest at its batch (or the one named).
  const auto t_load = std::chrono::steady_clock::now();
  const std::clock_t cpu_load = std::clock();  // process CPU time: what a shared machine does not inflate
  nnpress::Model model;
  Status st = nnpress::Model::open_file(pos[0], &model);
  Net net;
  if (st.ok()) st = load_net(model, B, threads, formats, &net);
  const double load_s = seconds_since(t_load), load_cpu_s = double(std::clock() - cpu_load) / CLOCKS_PER_SEC;
  if (!st.ok()) {
    std::fprintf(stderr, "edge_digits: %s\n", st.message().c_str());
    return 1;
  }

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

  // Per layer: the format used and, when it was measured, every candidate's time at the layer's batch.
  std::string layers_json, layers_text, choice;
  size_t weight_bytes = 0;
  for (int l = 0; l < kLayers; ++l) {
    const Layer& ly = net.layer[l];
    weight_bytes += ly.weight_bytes();
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "%s\"%s\": {\"format\": \"%s\", \"forced\": %s, \"items\": %zu, \"bytes\": %zu, \"us\": {",
                  l ? ", " : "", kNames[l], nnpress::layer_format_name(ly.format()), ly.forced() ? "true" : "false",
                  ly.batch(), ly.weight_bytes());
    layers_json += buf;
    std::snprintf(buf, sizeof buf, "  %-6s %4u x %-4u items %-5zu -> %-8s", kNames[l], ly.rows(), ly.cols(), ly.batch(),
                  nnpress::layer_format_name(ly.format()));
    layers_text += buf;
    bool first = true;
    for (const nnpress::FormatTiming& t : ly.timings()) {
      if (!t.status.ok() || t.seconds <= 0) continue;
      std::snprintf(buf, sizeof buf, "%s\"%s\": %.3f", first ? "" : ", ", nnpress::layer_format_name(t.format),
                    t.seconds * 1e6);
      layers_json += buf;
      std::snprintf(buf, sizeof buf, " %s %.2f us", nnpress::layer_format_name(t.format), t.seconds * 1e6);
      layers_text += buf;
      first = false;
    }
    layers_json += "}}";
    layers_text += ly.forced() ? " (forced)\n" : "\n";
    choice += std::string(l ? "," : "") + kNames[l] + "=" + nnpress::layer_format_name(ly.format());
  }

  if (json) {
    std::printf(
        "{\"images\": %zu, \"correct\": %zu, \"accuracy\": %.6f, \"agree\": %zu, \"expected_given\": %s, "
        "\"load_s\": %.6f, \"load_cpu_s\": %.6f, \"latency_median_us\": %.3f, \"latency_mean_us\": %.3f, "
        "\"latency_p90_us\": %.3f, "
        "\"repeat\": %d, \"batch\": %zu, \"model_bytes\": %zu, \"weight_bytes\": %zu, \"isa\": \"%s\", "
        "\"formats\": \"%s\", \"layers\": {%s}}\n",
        n, correct, acc, agree, expected.empty() ? "false" : "true", load_s, load_cpu_s, median * 1e6, mean * 1e6,
        p90 * 1e6, repeat, B, model.file_size(), weight_bytes, nnpress::isa_name(nnpress::detect_isa()), choice.c_str(),
        layers_json.c_str());
  } else {
    std::printf("model      %s: %zu bytes, %zu tensors, loaded (decode + format choice) in %.3f ms (CPU %.3f ms)\n",
                pos[0].c_str(), model.file_size(), model.tensor_count(), load_s * 1e3, load_cpu_s * 1e3);
    std::printf("layers     %s, 1 thread, batch %zu (weights held: %zu bytes)\n%s",
                nnpress::isa_name(nnpress::detect_isa()), B, weight_bytes, layers_text.c_str());
    std::printf("formats    --formats %s\n", choice.c_str());
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
