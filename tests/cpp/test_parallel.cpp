// The worker pool and parallel_for (cpp/src/common/parallel.h): every item exactly once, slots,
// nested calls, concurrent callers, exceptions, a pool whose threads fail to start, and the
// reader's error order on top of it.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "check.h"
#include "common/parallel.h"
#include "nnpress/format/container.h"

using namespace nnpress;
using nnpress::detail::parallel_for;
using nnpress::detail::parallel_slots;

// fn(i, slot) for n items: each item exactly once, slots in range and never shared by two items
// running at the same time.
template <class Run>
static void check_exactly_once(size_t n, unsigned threads, unsigned max_slots, Run&& run) {
  std::vector<std::atomic<int>> hits(n);
  std::vector<std::atomic<int>> busy(std::max(1u, max_slots));
  std::atomic<int> bad_slot{0}, shared_slot{0};
  run(n, threads, [&](size_t i, unsigned slot) {
    if (slot >= busy.size()) {
      ++bad_slot;
      return;
    }
    if (busy[slot].exchange(1) != 0) ++shared_slot;
    hits[i].fetch_add(1);
    volatile unsigned spin = 0;
    for (unsigned k = 0; k < 200 * (i % 7); ++k) spin = spin + k;  // uneven items
    busy[slot].store(0);
  });
  CHECK(bad_slot.load() == 0);
  CHECK(shared_slot.load() == 0);
  bool once = true;
  for (size_t i = 0; i < n; ++i) once = once && hits[i].load() == 1;
  CHECK(once);
}

static void test_exactly_once() {
  for (size_t n : {0, 1, 2, 3, 5, 16, 63, 1000, 10007}) {
    for (unsigned threads : {0u, 1u, 2u, 3u, 4u, 8u, 64u}) {
      const unsigned slots = parallel_slots(n, threads);
      CHECK(slots >= 1);
      CHECK(slots <= std::max<size_t>(1, n));
      if (threads) CHECK(slots <= threads);
      check_exactly_once(n, threads, slots, [](size_t n2, unsigned t, auto&& fn) { parallel_for(n2, t, fn); });
    }
  }
  // The one-argument form.
  std::vector<int> out(500, 0);
  parallel_for(out.size(), 0, [&](size_t i) { out[i] = int(i) * 3; });
  bool ok = true;
  for (size_t i = 0; i < out.size(); ++i) ok = ok && out[i] == int(i) * 3;
  CHECK(ok);
}

// threads = 0 is hardware_threads(), and the pool may use it.
static void test_threads_used() {
  const unsigned hw = detail::hardware_threads();
  CHECK(hw >= 1);
  CHECK(hw == std::max(1u, std::thread::hardware_concurrency()));
  CHECK(parallel_slots(1000, 0) == hw);
  CHECK(parallel_slots(1000, 1) == 1);
  if (hw < 2) return;
  // Items that wait for each other can only finish if two threads run them at once.
  std::atomic<int> arrived{0};
  std::atomic<bool> both{false};
  parallel_for(2, 2, [&](size_t) {
    ++arrived;
    for (int k = 0; k < 2000000 && arrived.load() < 2; ++k) std::this_thread::yield();
    if (arrived.load() == 2) both = true;
  });
  CHECK(both.load());
}

// A call from inside an item runs inline on that thread, in index order.
template <class Outer>
static void check_nested(Outer&& outer_for) {
  const size_t outer = 6, inner = 40;
  std::vector<std::atomic<int>> hits(outer * inner);
  std::atomic<int> moved{0}, out_of_order{0};
  outer_for(outer, [&](size_t i) {
    const std::thread::id me = std::this_thread::get_id();
    size_t last = 0;
    bool first = true;
    parallel_for(inner, 0, [&](size_t j) {
      if (std::this_thread::get_id() != me) ++moved;
      if (!first && j != last + 1) ++out_of_order;
      first = false;
      last = j;
      hits[i * inner + j].fetch_add(1);
      volatile unsigned spin = 0;  // long enough for an idle worker to take items if it could
      for (unsigned k = 0; k < 20000; ++k) spin = spin + k;
    });
  });
  CHECK(moved.load() == 0);
  CHECK(out_of_order.load() == 0);
  bool once = true;
  for (auto& h : hits) once = once && h.load() == 1;
  CHECK(once);
}

static void test_nested() {
  // Outer and inner calls on the process pool.
  check_nested([](size_t n, auto&& fn) { parallel_for(n, 0, fn); });
  // Outer calls on a private pool: the process pool's workers are idle, so an inner call that did
  // not run inline would hand items to them.
  detail::TestPool pool(2, 2);
  check_nested([&](size_t n, auto&& fn) { pool.parallel_for_slots(n, 0, [&](size_t i, unsigned) { fn(i); }); });
}

// Several threads calling at once: every call sees its own items exactly once.
static void test_concurrent_callers() {
  const int callers = 4, rounds = 200;
  std::atomic<int> wrong{0};
  std::vector<std::thread> th;
  for (int c = 0; c < callers; ++c) {
    th.emplace_back([&, c] {
      for (int r = 0; r < rounds; ++r) {
        const size_t n = size_t(1 + (r * 7 + c) % 40);
        std::vector<std::atomic<int>> hits(n);
        parallel_for(n, unsigned(r % 4), [&](size_t i) { hits[i].fetch_add(1); });
        for (auto& h : hits)
          if (h.load() != 1) ++wrong;
      }
    });
  }
  for (auto& t : th) t.join();
  CHECK(wrong.load() == 0);
}

// An item that throws: the call rethrows (after the items already running end); the pool still works.
static void test_exception() {
  for (unsigned threads : {1u, 2u, 0u}) {
    std::atomic<int> ran{0};
    bool caught = false;
    try {
      parallel_for(100, threads, [&](size_t i) {
        ++ran;
        if (i == 5) throw std::runtime_error("item 5");
      });
    } catch (const std::runtime_error& e) {
      caught = std::strcmp(e.what(), "item 5") == 0;
    }
    CHECK(caught);
    CHECK(ran.load() >= 1 && ran.load() <= 100);
    std::atomic<int> after{0};
    parallel_for(100, threads, [&](size_t) { ++after; });
    CHECK(after.load() == 100);
  }
}

// A pool whose threads fail to start keeps the workers it got and still runs every item.
static void test_thread_start_failure() {
  for (unsigned limit : {0u, 1u, 2u, 6u}) {
    detail::TestPool pool(6, limit);
    CHECK(pool.workers() == limit);
    for (size_t n : {0, 1, 2, 7, 100, 1001}) {
      for (unsigned threads : {0u, 2u, 4u, 16u}) {
        // Slots: the caller plus at most the workers that started, and no more than `threads` in all.
        const size_t cap = std::min<size_t>(
            {std::max<size_t>(1, n), threads ? threads : detail::hardware_threads(), size_t(limit) + 1});
        check_exactly_once(n, threads, unsigned(cap),
                           [&](size_t n2, unsigned t, auto&& fn) { pool.parallel_for_slots(n2, t, fn); });
      }
    }
  }
  // With no worker at all everything runs on the caller.
  detail::TestPool none(4, 0);
  std::atomic<int> elsewhere{0};
  const std::thread::id me = std::this_thread::get_id();
  none.parallel_for_slots(64, 0, [&](size_t, unsigned slot) {
    if (std::this_thread::get_id() != me || slot != 0) ++elsewhere;
  });
  CHECK(elsewhere.load() == 0);
}

#ifdef NNPRESS_WITH_ENCODER
// The reader reports the error of the first failing chunk in file order, for every thread count,
// although chunks run largest first on whichever thread is free.
static void test_reader_error_order() {
  const uint64_t rows = 64, cols = 32;
  std::vector<int32_t> levels(rows * cols);
  for (size_t i = 0; i < levels.size(); ++i) levels[i] = int32_t((i * 2654435761u) % 9) - 4;
  TensorInput t;
  t.name = "w";
  t.storage = Storage::kQuantized;
  t.shape = {rows, cols};
  t.levels = levels.data();
  t.step = 0.5;
  t.rows_per_block = 8;  // 8 chunks
  std::vector<uint8_t> bytes;
  CHECK(write_container({t}, WriterOptions(), &bytes).ok());
  ContainerReader r;
  CHECK(ContainerReader::open_memory(bytes.data(), bytes.size(), &r).ok());
  if (r.tensor_count() != 1 || r.tensor(0).chunks.size() != 8) {
    CHECK(false);
    return;
  }
  // Corrupt chunks 3, 5 and 8 (1-based): one byte in the middle of each payload.
  for (size_t k : {2, 4, 7}) {
    const ChunkRef& ch = r.tensor(0).chunks[k];
    bytes[size_t(ch.offset + ch.size / 2)] ^= 0x40;
  }
  std::vector<float> out(rows * cols);
  for (unsigned threads : {1u, 2u, 3u, 8u, 0u}) {
    Status s = r.decode(0, out.data(), out.size() * sizeof(float), threads);
    CHECK(s.code() == StatusCode::kCorrupt);
    CHECK(s.message().find("chunk 3 of 8") != std::string::npos);
    std::vector<int32_t> lv(rows * cols);
    s = r.decode_levels(0, lv.data(), lv.size(), threads);
    CHECK(s.message().find("chunk 3 of 8") != std::string::npos);
  }
}
#endif

int main() {
  test_exactly_once();
  test_threads_used();
  test_nested();
  test_concurrent_callers();
  test_exception();
  test_thread_start_failure();
#ifdef NNPRESS_WITH_ENCODER
  test_reader_error_order();
#endif
  return TEST_MAIN_RESULT();
}
