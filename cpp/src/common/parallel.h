// Internal: the library's one worker pool and parallel_for (not installed, not public API).
//
// CONTRACT
//   parallel_for(n, threads, fn) calls fn(item) — or fn(item, slot) — exactly once for every item in
//   [0, n) and returns when all calls have returned. The calling thread runs items itself; up to
//   `threads` - 1 workers of one process-wide pool help (threads == 0: hardware_threads()). Items are
//   claimed one at a time in index order by whichever thread is free, so callers that want the big
//   items first pass them first. Which thread runs an item varies from call to call: callers that
//   need deterministic results write each item's result to its own slot and combine them in item
//   order afterwards. `slot` (< parallel_slots(n, threads)) is unique among the threads running
//   items of one call at the same time: an index for per-thread scratch space.
//
//   The pool is made on first use with hardware_threads() - 1 workers that wait on a condition
//   variable, and it is never destroyed; a forked child makes its own. Each call wakes only as many
//   workers as it can use (items - 1, capped by `threads` - 1). Several callers may run at once:
//   every call queues its job, its caller works on it at once, and free workers join the oldest job
//   that still has unclaimed items. A call that finds every worker busy therefore runs its items on
//   its caller (a latency-sensitive caller never waits for a worker to come free), with help from
//   workers as they finish other jobs.
//
//   Failure modes:
//   - If the system refuses to start a worker thread the pool keeps the workers it got (possibly
//     none) and every call still completes, on fewer threads.
//   - A call made from inside an item (from a pool worker, or from a caller running its items)
//     runs all its items inline on that thread, in index order: no nesting, no deadlock.
//   - If fn throws, no further items of that call are started, the call waits for the items
//     already running, and the first exception is rethrown to the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <type_traits>

namespace nnpress::detail {

// std::thread::hardware_concurrency() (at least 1), read once per process.
unsigned hardware_threads();

// The number of threads a call with these arguments may use: min(n, threads or hardware_threads(),
// pool workers + 1), at least 1 (also for n == 0). Slots passed to fn are below this.
unsigned parallel_slots(size_t n, unsigned threads);

// The core: fn(item, slot).
void parallel_for_slots(size_t n, unsigned threads, const std::function<void(size_t, unsigned)>& fn);

template <class Fn>
void parallel_for(size_t n, unsigned threads, Fn&& fn) {
  if constexpr (std::is_invocable_v<Fn&, size_t, unsigned>) {
    parallel_for_slots(n, threads, std::function<void(size_t, unsigned)>(std::ref(fn)));
  } else {
    parallel_for_slots(n, threads, [&fn](size_t i, unsigned) { fn(i); });
  }
}

// Rows [0, rows) of a matrix product split into contiguous blocks, one per thread: f(r0, r1) for each
// block. threads == 1: f(0, rows) on the caller. Otherwise at most min(threads or hardware_threads(),
// rows / 64) blocks; threads == 0 (as many as pay) also at most one block per `work_per_thread` units of
// `work`, since waking a worker and waiting for it costs about as long as that much work. The caller
// and the pool workers it wakes take the blocks; when the workers are busy with another call the caller
// computes the blocks itself rather than wait for one (parallel_for).
template <class F>
void parallel_rows(uint32_t rows, unsigned threads, uint64_t work, uint64_t work_per_thread, F&& f) {
  if (threads == 1) {
    f(0u, rows);
    return;
  }
  const unsigned hw = hardware_threads();
  unsigned n = threads == 0 ? hw : (threads < hw ? threads : hw);
  const uint32_t by_rows = rows / 64 > 1 ? rows / 64 : 1;
  if (n > by_rows) n = by_rows;
  if (threads == 0) {
    const uint64_t by_work = work / work_per_thread > 1 ? work / work_per_thread : 1;
    if (n > by_work) n = unsigned(by_work);
  }
  if (n <= 1) {
    f(0u, rows);
    return;
  }
  const uint64_t per = (uint64_t(rows) + n - 1) / n;
  parallel_for(n, n, [&f, rows, per](size_t t) {
    const uint64_t r0 = per * t, r1 = per * (t + 1);
    f(uint32_t(r0 < rows ? r0 : rows), uint32_t(r1 < rows ? r1 : rows));
  });
}

// ---- for tests ----
// A private pool with `workers` workers, of which only the first `start_limit` start (the next
// thread start throws std::system_error, as when the system is out of threads). Runs calls exactly
// like the process pool; joins its workers when destroyed.
class WorkerPool;
class TestPool {
 public:
  TestPool(unsigned workers, unsigned start_limit);
  ~TestPool();
  TestPool(const TestPool&) = delete;
  TestPool& operator=(const TestPool&) = delete;
  unsigned workers() const;  // workers that started
  void parallel_for_slots(size_t n, unsigned threads, const std::function<void(size_t, unsigned)>& fn);

 private:
  WorkerPool* pool_;
};

}  // namespace nnpress::detail
