// One call of paged_decode_attention in two steps, for callers that run the work units on their own
// threads (the decoder plan): the constructor checks the tensors and builds the schedule (units of up to
// kSplitTokens tokens of one sequence, see paged_decode.cpp); run(i, scratch) computes unit i, from any
// thread, each unit once; a split sequence is merged by the thread that finishes its last part.
// `split_heads`: one unit per kv head too (more units for few sequences; each head's results are the same
// either way). rebind() points the call at the data of another layer's caches, which the caller has
// checked to have the first ones' dtype, sizes and strides, for another round of the units.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace neutrino {

class DecodeAttention {
 public:
  DecodeAttention(const at::Tensor& out, const at::Tensor& q, const at::Tensor& key_cache,
                  const at::Tensor& value_cache, const at::Tensor& block_tables, const at::Tensor& seq_lens,
                  double scale, bool force_generic, bool split_heads);
  int64_t units() const { return works_.empty() ? 0 : heads_ * works_[0]->units(); }
  int64_t scratch_floats() const { return works_.empty() ? 0 : works_[0]->scratch_floats(); }
  // Enough work for more than one thread.
  bool parallel() const { return !works_.empty() && (heads_ > 1 || works_[0]->parallel()); }
  void run(int64_t unit, float* scratch) { works_[unit % heads_]->run(unit / heads_, scratch); }
  void rebind(const void* key_cache, const void* value_cache);

  struct Work {
    virtual ~Work() = default;
    virtual int64_t units() const = 0;
    virtual int64_t scratch_floats() const = 0;
    virtual bool parallel() const = 0;
    virtual void run(int64_t unit, float* scratch) = 0;
    virtual void rebind(const void* k, const void* v) = 0;
  };

 private:
  std::vector<std::unique_ptr<Work>> works_;
  int64_t heads_ = 1, kv_es_ = 0, k_s2_ = 0, v_s2_ = 0;
};

}  // namespace neutrino
