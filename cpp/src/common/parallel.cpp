// The worker pool behind parallel_for (parallel.h).
#include "parallel.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace nnpress::detail {
namespace {

// True on pool workers, and on a caller while it runs items of its own call: a parallel_for from
// there runs inline.
thread_local bool t_inside_pool = false;

struct Job {
  const std::function<void(size_t, unsigned)>* fn = nullptr;
  size_t n = 0;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  unsigned max_helpers = 0;
  // Guarded by the pool's mutex:
  unsigned joined = 0;  // helpers that joined so far (helper k runs with slot k)
  unsigned active = 0;  // helpers still running items
  std::exception_ptr error;
  std::condition_variable done;
};

// Claims and runs items of `job` until none are left or one has thrown; returns the exception.
std::exception_ptr run_items(Job& job, unsigned slot) {
  try {
    while (!job.failed.load(std::memory_order_relaxed)) {
      const size_t i = job.next.fetch_add(1, std::memory_order_relaxed);
      if (i >= job.n) break;
      (*job.fn)(i, slot);
    }
  } catch (...) {
    job.failed.store(true, std::memory_order_relaxed);
    return std::current_exception();
  }
  return nullptr;
}

}  // namespace

class WorkerPool {
 public:
  WorkerPool(unsigned want, unsigned start_limit) : pid_(getpid()) {
    threads_.reserve(want);
    try {
      for (unsigned k = 0; k < want; ++k) {
        if (k >= start_limit) throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
        threads_.emplace_back([this] { loop(); });
      }
    } catch (const std::system_error&) {
      // Keep the workers that started; calls run on fewer threads.
    }
    workers_ = unsigned(threads_.size());
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // The process-wide pool: made on first use and never destroyed (its workers wait until the
  // process ends). A forked child, whose copy of the pool has no workers, makes its own.
  static WorkerPool* process() {
    static std::atomic<WorkerPool*> pool{nullptr};
    static std::mutex make;
    WorkerPool* p = pool.load(std::memory_order_acquire);
    if (p && p->pid_ == getpid()) return p;
    std::lock_guard<std::mutex> g(make);
    p = pool.load(std::memory_order_acquire);
    if (!p || p->pid_ != getpid()) {
      p = new WorkerPool(hardware_threads() - 1, UINT_MAX);  // a parent's pool, in a child, is left as it is
      pool.store(p, std::memory_order_release);
    }
    return p;
  }

  unsigned workers() const { return workers_; }

  unsigned slots(size_t n, unsigned threads) const {
    const unsigned t = threads ? threads : hardware_threads();
    return unsigned(std::max<size_t>(1, std::min<size_t>({n, size_t(t), size_t(workers_) + 1})));
  }

  void run(size_t n, unsigned threads, const std::function<void(size_t, unsigned)>& fn) {
    const unsigned parts = slots(n, threads);
    if (parts <= 1 || t_inside_pool) {
      for (size_t i = 0; i < n; ++i) fn(i, 0);
      return;
    }
    Job job;
    job.fn = &fn;
    job.n = n;
    job.max_helpers = parts - 1;
    {
      std::lock_guard<std::mutex> g(m_);
      jobs_.push_back(&job);
    }
    for (unsigned k = 1; k < parts; ++k) wake_.notify_one();  // only as many workers as can help
    t_inside_pool = true;
    const std::exception_ptr mine = run_items(job, 0);
    t_inside_pool = false;
    std::unique_lock<std::mutex> g(m_);
    jobs_.erase(std::find(jobs_.begin(), jobs_.end(), &job));  // no helper joins from here on
    job.done.wait(g, [&] { return job.active == 0; });
    if (mine) std::rethrow_exception(mine);
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  // The oldest job that still has unclaimed items and room for a helper.
  Job* claimable() const {
    for (Job* j : jobs_)
      if (j->joined < j->max_helpers && j->next.load(std::memory_order_relaxed) < j->n &&
          !j->failed.load(std::memory_order_relaxed))
        return j;
    return nullptr;
  }

  void loop() {
    t_inside_pool = true;
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      Job* job = nullptr;
      wake_.wait(g, [&] { return stop_ || (job = claimable()) != nullptr; });
      if (stop_) return;
      const unsigned slot = ++job->joined;
      ++job->active;
      g.unlock();
      std::exception_ptr e = run_items(*job, slot);
      g.lock();
      if (e && !job->error) job->error = e;
      if (--job->active == 0) job->done.notify_all();
    }
  }

  const pid_t pid_;
  unsigned workers_ = 0;
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable wake_;
  std::vector<Job*> jobs_;  // calls in progress, oldest first
  bool stop_ = false;
};

unsigned hardware_threads() {
  // hardware_concurrency() reads /sys on glibc (microseconds): once per process.
  static const unsigned n = std::max(1u, std::thread::hardware_concurrency());
  return n;
}

unsigned parallel_slots(size_t n, unsigned threads) {
  if (n <= 1 || threads == 1) return 1;  // parallel_for_slots runs such calls inline: no pool needed
  return WorkerPool::process()->slots(n, threads);
}

void parallel_for_slots(size_t n, unsigned threads, const std::function<void(size_t, unsigned)>& fn) {
  if (n == 0) return;
  if (n == 1 || threads == 1) {
    for (size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  WorkerPool::process()->run(n, threads, fn);
}

TestPool::TestPool(unsigned workers, unsigned start_limit) : pool_(new WorkerPool(workers, start_limit)) {}
TestPool::~TestPool() { delete pool_; }
unsigned TestPool::workers() const { return pool_->workers(); }
void TestPool::parallel_for_slots(size_t n, unsigned threads, const std::function<void(size_t, unsigned)>& fn) {
  pool_->run(n, threads, fn);
}

}  // namespace nnpress::detail
