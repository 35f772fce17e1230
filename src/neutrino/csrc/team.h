// A team of OpenMP threads that runs one piece of code together (SPMD), as the decoder plan's decode
// steps do: every thread calls the same sequence of all() / single() / barrier(), so the threads stay in
// one parallel region instead of starting one per op (on 2 vCPUs a region's start and end cost about as
// much as a small linear's weights take to stream). An exception in any thread skips the work left for all
// threads (each still passes every barrier, so none waits forever) and is rethrown by rethrow() after the
// region.
#pragma once

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>

namespace neutrino {

class TeamState {
 public:
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  void fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = e;
    failed_.store(true, std::memory_order_release);
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }
  void set_result(int64_t v) { result_ = v; }  // a value thread 0 hands out of the region
  int64_t result() const { return result_; }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
  int64_t result_ = 0;
};

class Team {
 public:
  explicit Team(TeamState& state) : state_(state), tid_(omp_get_thread_num()), size_(omp_get_num_threads()) {}
  int tid() const { return tid_; }
  int size() const { return size_; }
  // [b0, b1): this thread's even share of n items.
  int64_t begin(int64_t n) const { return n * tid_ / size_; }
  int64_t end(int64_t n) const { return n * (tid_ + 1) / size_; }

  template <typename F>
  void all(const F& f) {  // every thread runs f (its own share of the work)
    if (state_.failed()) return;
    try {
      f();
    } catch (...) {
      state_.fail(std::current_exception());
    }
  }
  template <typename F>
  void single(const F& f) {  // thread 0 runs f, then all wait for it
    if (tid_ == 0) all(f);
    barrier();
  }
  void barrier() {
#pragma omp barrier
  }

 private:
  TeamState& state_;
  int tid_, size_;
};

}  // namespace neutrino
