// CudaLlamaModel forward: the same layer sequence as llama.cc, on device tensors.
//   embed -> [rmsnorm, qkv GEMM, RoPE + paged KV write, paged attention, o GEMM,
//   rmsnorm(+residual), gate_up GEMM, silu_mul (decode: in the GEMM's epilogue), down GEMM (or MoE),
//   rmsnorm(+residual)] -> lm head
// Scratch buffers grow to the largest step seen; batch metadata is uploaded once per step.
// Decode steps of dense models are captured once per shape and replayed as CUDA graphs
// (KILN_CUDA_GRAPHS=0 turns that off); everything runs on the model's own stream.
// The class is declared in llama_cuda_model.h; the feed-forward / MoE steps are in llama_cuda_moe.cc.
#include "kiln/models/llama_cuda.h"

#ifndef KILN_WITH_CUDA
namespace kiln {
Result<std::unique_ptr<Model>> create_cuda_model(LoadedModel&& loaded, const ModelOptions&) {
  return unimplemented(loaded.path + ": --device cuda needs a build with KILN_CUDA=ON (this kiln is CPU-only)");
}
}  // namespace kiln
#else
#include <chrono>
#include <vector>

#include "kiln/models/llama_cuda_model.h"

namespace kiln {
namespace cuda_llama {

int64_t g_scratch_generation = 0;

// A decode graph bakes in the attention's split plan, which follows the block-table width, so
// graphs are keyed by it. Widths are rounded up to an eighth of their power of two (at least 16
// blocks): a growing context then recaptures every ~12% of its length instead of every block.
namespace {
int32_t graph_table_width(int32_t width) {
  if (width <= 16) return 16;
  int32_t pow2 = 1;
  while (pow2 < width) pow2 <<= 1;
  const int32_t step = pow2 / 8;
  return (width + step - 1) / step * step;
}

// Decode graphs of dense models also run at a rounded token count (vLLM pads its batches to
// captured sizes the same way): up to 8 tokens exact, then multiples of 8 up to 64, of 16 up to
// 128, of 32 beyond.
int64_t graph_tokens(int64_t n) {
  const int64_t step = n <= 8 ? 1 : n <= 64 ? 8 : n <= 128 ? 16 : 32;
  return (n + step - 1) / step * step;
}

// b with dummy sequences appended up to `tokens` tokens: token 0 at position 0, no KV write (slot
// -1), one key (block 0's first slot: the cache is zeroed at allocation, so it holds finite values),
// a logits row each. Rows are independent through every layer, so the real rows' results do not
// change; the dummy rows' logits are computed and never read.
ForwardBatch padded_decode_batch(const ForwardBatch& b, int64_t tokens) {
  ForwardBatch p = b;
  for (auto i = static_cast<int32_t>(b.token_ids.size()); i < tokens; ++i) {
    p.token_ids.push_back(0);
    p.positions.push_back(0);
    p.slot_mapping.push_back(-1);
    p.cu_seqlens_q.push_back(i + 1);
    p.kv_lens.push_back(1);
    p.block_tables.resize(p.block_tables.size() + static_cast<size_t>(b.max_blocks_per_seq), 0);
    p.logits_rows.push_back(i);
  }
  return p;
}
}  // namespace

Status CudaLlamaModel::upload_batch(const ForwardBatch& b, int32_t width) {
  const int64_t n = static_cast<int64_t>(b.token_ids.size()), batch = static_cast<int64_t>(b.kv_lens.size());
  for (int32_t id : b.token_ids)
    if (id < 0 || id >= config_.vocab_size) return out_of_range("token id " + std::to_string(id) + " outside the vocabulary");
  host_meta_.clear();
  // Leading single-token sequences (decodes first): in steps with prompt tokens their attention takes the
  // decode kernel, the rest the prefill kernel, whose cu_seqlens (rebased to 0) ride along as part seven.
  decode_seqs_ = 0;
  while (decode_seqs_ < batch && b.cu_seqlens_q[static_cast<size_t>(decode_seqs_) + 1] - b.cu_seqlens_q[static_cast<size_t>(decode_seqs_)] == 1)
    ++decode_seqs_;
  kv_tokens_ = decode_kv_tokens_ = 0;
  for (int64_t i = 0; i < batch; ++i) {
    kv_tokens_ += b.kv_lens[static_cast<size_t>(i)];
    if (i < decode_seqs_) decode_kv_tokens_ += b.kv_lens[static_cast<size_t>(i)];
  }
  prompt_cu_.clear();
  for (int64_t i = decode_seqs_; i <= batch; ++i)
    prompt_cu_.push_back(b.cu_seqlens_q[static_cast<size_t>(i)] - b.cu_seqlens_q[static_cast<size_t>(decode_seqs_)]);
  const std::vector<int32_t>* tables = &b.block_tables;
  if (width != b.max_blocks_per_seq) {  // rows padded with block 0 (never read: kv_lens bounds them)
    padded_tables_.assign(static_cast<size_t>(batch * width), 0);
    for (int64_t i = 0; i < batch; ++i)
      std::copy_n(b.block_tables.begin() + i * b.max_blocks_per_seq, b.max_blocks_per_seq, padded_tables_.begin() + i * width);
    tables = &padded_tables_;
  }
  const std::vector<int32_t>* parts[] = {&b.token_ids, &b.positions, &b.slot_mapping, &b.cu_seqlens_q, &b.kv_lens, tables,
                                         &prompt_cu_};
  std::vector<int64_t> offsets;
  for (const auto* p : parts) {
    offsets.push_back(static_cast<int64_t>(host_meta_.size()));
    host_meta_.insert(host_meta_.end(), p->begin(), p->end());
  }
  // At least 4 MiB (block tables of 128 sequences x 2048 blocks): a growth moves the buffer under
  // every decode graph captured so far, and the tables grow with the batch and the context.
  KILN_ASSIGN_OR_RETURN(Tensor all, meta_.get(DType::kInt32, {std::max<int64_t>(static_cast<int64_t>(host_meta_.size()), int64_t{1} << 20)}));
  KILN_RETURN_IF_ERROR(cuda_status(cudaEventSynchronize(upload_done_), "upload wait"));  // staging is free again
  KILN_ASSIGN_OR_RETURN(int32_t* staging, meta_staging_.get(static_cast<int64_t>(host_meta_.size())));
  std::memcpy(staging, host_meta_.data(), host_meta_.size() * 4);
  KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(all.data, staging, host_meta_.size() * 4, cudaMemcpyHostToDevice, stream_), "upload batch"));
  KILN_RETURN_IF_ERROR(cuda_status(cudaEventRecord(upload_done_, stream_), "upload event"));
  auto at = [&](int i, std::initializer_list<int64_t> shape) {
    return Tensor::view(all.ptr<int32_t>() + offsets[static_cast<size_t>(i)], DType::kInt32, shape, Device::kCuda);
  };
  ids_ = at(0, {n});
  positions_ = at(1, {n});
  slots_ = at(2, {n});
  cu_ = at(3, {batch + 1});
  kv_lens_ = at(4, {batch});
  tables_ = at(5, {batch, width});
  prompt_cu_dev_ = at(6, {batch - decode_seqs_ + 1});
  return ok_status();
}

Status CudaLlamaModel::attention(const CudaLayerWeights& lw, int64_t layer, const KvCacheView& kv, int64_t n, bool h_fp8) {
  const ModelConfig& c = config_;
  const int64_t d = c.head_dim, hq = c.num_q_heads, hkv = c.num_kv_heads, width = (hq + 2 * hkv) * d;
  KILN_ASSIGN_OR_RETURN(Tensor qkv, qkv_.get(DType::kBF16, {n, width}));
  if (h_fp8) {
    KILN_ASSIGN_OR_RETURN(const HFp8 hq, hq_views(n));
    KILN_RETURN_IF_ERROR(gemm_.run_quantized({hq.q, hq.scale, lw.qkv.tensor, lw.qkv_bias.tensor, qkv, lw.qkv_scale.tensor}, stream_));
  } else {
    KILN_ASSIGN_OR_RETURN(Tensor h, h_.get(DType::kBF16, {n, c.hidden_size}));
    KILN_RETURN_IF_ERROR(gemm_.run({h, lw.qkv.tensor, lw.qkv_bias.tensor, qkv, lw.qkv_scale.tensor}, stream_));
  }
  const Tensor q = head_view(qkv, 0, hq, d), k = head_view(qkv, hq * d, hkv, d), v = head_view(qkv, (hq + hkv) * d, hkv, d);
  const Tensor& kc = kv.k[static_cast<size_t>(layer)];
  const Tensor& vc = kv.v[static_cast<size_t>(layer)];
  KILN_ASSIGN_OR_RETURN(Tensor qc, q_.get(DType::kBF16, {n, hq, d}));  // rotated q, dense for attention
  const RopeKvWriteArgs rope{q, k, v, positions_, inv_freq_.tensor, slots_, kc, vc, lw.k_scale, lw.v_scale, qc,
                             options_.hadamard_keys(d)};
  KILN_ASSIGN_OR_RETURN(Tensor attn, attn_.get(DType::kBF16, {n, hq, d}));
  PagedAttentionArgs pa{qc, kc, vc, cu_, kv_lens_, tables_, attn, 1.0f / std::sqrt(static_cast<float>(d)), c.sliding_window,
                        lw.k_scale, lw.v_scale};
  // Decode steps: RoPE and the KV write inside the decode attention kernel where it has the row
  // (fp8 caches only with KILN_FUSED_ROPE=2: measured slower, see init).
  if (fused_rope_ > (kc.dtype == DType::kBF16 ? 0 : 1) && n == batch_ && decode_seqs_ == batch_ &&
      decode_attention_rope_supported(kc.dtype, d, hq / hkv, rope.hadamard_qk)) {
    KILN_RETURN_IF_ERROR(decode_attention_rope_cuda(rope, pa, 0, stream_, decode_workspace()));
    ++fused_rope_layers_;
  } else {
    KILN_RETURN_IF_ERROR(rope_kv_write_cuda(rope, stream_));
    KILN_RETURN_IF_ERROR(attend(pa, n));
  }
  KILN_ASSIGN_OR_RETURN(Tensor x, x_.get(DType::kBF16, {n, c.hidden_size}));
  return gemm_.run({Tensor::view(attn.data, DType::kBF16, {n, hq * d}, Device::kCuda), lw.o_proj.tensor, {}, x, lw.o_proj_scale.tensor}, stream_);
}

// Attention over the cache after rope_kv_write_cuda: steps with prompt tokens (n > batch) take
// the Hopper wgmma kernel where it applies (mixed steps: the leading decode tokens the decode
// kernel, which would otherwise give each its own 128-row query tile), the rest paged_attention.
Status CudaLlamaModel::attend(const PagedAttentionArgs& pa, int64_t n) {
  if (!(n > batch_ && use_hopper_ && hopper_prefill_supported(pa))) return paged_attention(pa);
  if (decode_seqs_ == 0 || !split_attention_) return hopper_prefill(pa, kv_tokens_);
  const int64_t dq = decode_seqs_;
  PagedAttentionArgs dec = pa, pre = pa;
  dec.q = pa.q.slice0(0, dq);
  dec.out = pa.out.slice0(0, dq);
  dec.cu_seqlens_q = cu_.slice0(0, dq + 1);
  dec.kv_lens = kv_lens_.slice0(0, dq);
  dec.block_tables = tables_.slice0(0, dq);
  pre.q = pa.q.slice0(dq, n);
  pre.out = pa.out.slice0(dq, n);
  pre.cu_seqlens_q = prompt_cu_dev_;
  pre.kv_lens = kv_lens_.slice0(dq, batch_);
  pre.block_tables = tables_.slice0(dq, batch_);
  KILN_RETURN_IF_ERROR(paged_attention(dec));
  return hopper_prefill(pre, kv_tokens_ - decode_kv_tokens_);
}

DecodeWorkspaceFn CudaLlamaModel::decode_workspace() {
  return [this](int64_t bytes) -> Result<void*> {
    const void* before = decode_ws_.buf.data();
    KILN_ASSIGN_OR_RETURN(Tensor t, decode_ws_.get(DType::kInt8, {bytes}));
    if (t.data != before)  // grown: its split counters start at zero
      KILN_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(t.data, 0, static_cast<size_t>(decode_ws_.buf.size()), stream_),
                                       "decode attention workspace"));
    return t.data;
  };
}

Status CudaLlamaModel::paged_attention(const PagedAttentionArgs& a) {
  return paged_attention_cuda(a, stream_, decode_workspace());
}

Status CudaLlamaModel::hopper_prefill(const PagedAttentionArgs& a, int64_t kv_tokens) {
  HopperPrefillOptions o;
  const int64_t bytes = use_hopper_vt_ ? hopper_prefill_workspace_bytes(a, kv_tokens) : 0;
  if (bytes > 0) {  // one buffer for every layer: they run in order on the stream
    KILN_ASSIGN_OR_RETURN(Tensor ws, hopper_vt_.get(DType::kInt8, {bytes}));
    o.workspace = ws.data;
    o.workspace_bytes = bytes;
  }
  return prefill_attention_hopper_cuda(a, o, stream_);
}
Result<int32_t*> CudaLlamaModel::Pinned::get(int64_t n) {
  if (n > count) {
    if (data) cudaFreeHost(data);
    data = nullptr, count = 0;
    const int64_t want = std::max<int64_t>(n + n / 2, 4096);
    KILN_RETURN_IF_ERROR(cuda_status(cudaMallocHost(reinterpret_cast<void**>(&data), static_cast<size_t>(want) * 4), "pinned staging"));
    count = want;
  }
  return data;
}

Status CudaLlamaModel::forward_device(const ForwardBatch& b, const KvCacheView& kv) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(b.token_ids.size()), batch = static_cast<int64_t>(b.kv_lens.size());
  const int64_t rows = static_cast<int64_t>(b.logits_rows.size());
  if (n == 0 || b.positions.size() != b.token_ids.size() || b.slot_mapping.size() != b.token_ids.size() ||
      static_cast<int64_t>(kv.k.size()) != c.num_layers || kv.k[0].device != Device::kCuda)
    return invalid_argument("forward: empty batch, inconsistent sizes, or a KV cache not on the GPU");
  bool decode = n == batch && rows == n && (!c.num_experts || moe_decode_path(w_.layers[0], n));
  for (int64_t r = 0; decode && r < rows; ++r) decode = b.logits_rows[static_cast<size_t>(r)] == r;
  const bool graph = decode && use_graphs_;
  if (static_cast<int64_t>(b.block_tables.size()) != batch * b.max_blocks_per_seq)
    return invalid_argument("forward: block_tables must be [batch, max_blocks_per_seq]");
  if (graph) {
    // The first n rows of logits_ are the batch's whatever the padding (forward / forward_sample read those).
    const int64_t tokens = graph_tokens(n);
    // Dense models only: MoE dummy rows would be routed too (to the same experts: they are alike),
    // adding expert work (MoE decode graphs exist up to 64 tokens with fp8 experts, 16 with bf16).
    const bool pad = tokens != n && pad_decode_ && !c.num_experts;
    const ForwardBatch padded = pad ? padded_decode_batch(b, tokens) : ForwardBatch{};
    const ForwardBatch& g = pad ? padded : b;
    KILN_RETURN_IF_ERROR(upload_batch(g, graph_table_width(g.max_blocks_per_seq)));
    batch_ = static_cast<int64_t>(g.kv_lens.size());
    return run_decode_graph(g, batch_, kv);
  }
  KILN_RETURN_IF_ERROR(upload_batch(b, b.max_blocks_per_seq));
  batch_ = batch;
  return run_layers(b, n, rows, kv);
}

// Few (token, expert) slots: the expert GEMMs read the routing ids on the device, so there is no

Status CudaLlamaModel::forward(const ForwardBatch& b, const KvCacheView& kv, Tensor logits) {
  const ModelConfig& c = config_;
  const int64_t rows = static_cast<int64_t>(b.logits_rows.size());
  if (logits.shape[0] != rows || logits.shape[1] != c.vocab_size || logits.dtype != DType::kF32)
    return invalid_argument("forward: logits must be f32 [" + std::to_string(rows) + ", " + std::to_string(c.vocab_size) + "]");
  KILN_RETURN_IF_ERROR(forward_device(b, kv));
  KILN_ASSIGN_OR_RETURN(Tensor dl, logits_.get(DType::kF32, {rows, c.vocab_size}));
  if (logits.device == Device::kCuda) {
    return cuda_status(cudaMemcpyAsync(logits.data, dl.data, static_cast<size_t>(dl.nbytes()), cudaMemcpyDeviceToDevice, stream_), "logits");
  }
  KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(logits.data, dl.data, static_cast<size_t>(dl.nbytes()), cudaMemcpyDeviceToHost, stream_), "logits"));
  return cuda_status(cudaStreamSynchronize(stream_), "forward");
}

Status CudaLlamaModel::forward_sample(const ForwardBatch& b, const KvCacheView& kv, const std::vector<SamplingParams>& params,
                                      const std::vector<uint64_t>& steps, const std::vector<std::pair<int32_t, int32_t>>& banned,
                                      std::vector<int32_t>* ids) {
  const int64_t rows = static_cast<int64_t>(b.logits_rows.size());
  if (static_cast<int64_t>(params.size()) != rows || static_cast<int64_t>(steps.size()) != rows)
    return invalid_argument("forward_sample: one sampling parameter set and step per logits row");
  KILN_RETURN_IF_ERROR(forward_device(b, kv));
  ids->assign(static_cast<size_t>(rows), -1);
  if (rows == 0) return cuda_status(cudaStreamSynchronize(stream_), "forward");
  KILN_ASSIGN_OR_RETURN(Tensor dl, logits_.get(DType::kF32, {rows, config_.vocab_size}));
  KILN_ASSIGN_OR_RETURN(Tensor dev_ids, sampled_.get(DType::kInt32, {rows}));
  SampleArgs args{dl, params, steps, dev_ids, banned};
  KILN_RETURN_IF_ERROR(sampler_.sample(args, stream_));
  KILN_ASSIGN_OR_RETURN(int32_t* staging, ids_staging_.get(rows));
  KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(staging, dev_ids.data, static_cast<size_t>(rows) * 4, cudaMemcpyDeviceToHost, stream_), "ids"));
  KILN_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(stream_), "forward"));
  std::memcpy(ids->data(), staging, static_cast<size_t>(rows) * 4);
  return ok_status();
}

Status CudaLlamaModel::run_decode_graph(const ForwardBatch& b, int64_t n, const KvCacheView& kv) {
  // Scratch buffers and the GEMM's fp8 activation workspace grow on demand: a graph captured
  // before a growth would replay freed addresses, so both generations are in the key.
  const int64_t width = tables_.shape[1];  // graph_table_width(b.max_blocks_per_seq)
  const auto key = std::make_tuple(n, width, kv.k[0].data, g_scratch_generation, gemm_.workspace_generation());
  auto it = graphs_.find(key);
  if (it != graphs_.end()) {
    it->second.last_use = ++graph_clock_;
    return cuda_status(cudaGraphLaunch(it->second.exec, stream_), "graph launch");
  }
  // Graphs of older generations hold freed addresses: drop them.
  for (auto g = graphs_.begin(); g != graphs_.end();) {
    if (std::get<3>(g->first) == std::get<3>(key) && std::get<4>(g->first) == std::get<4>(key)) {
      ++g;
      continue;
    }
    cudaGraphExecDestroy(g->second.exec);
    g = graphs_.erase(g);
  }
  // Full: the least recently used graph goes (a launch of it still in flight completes first:
  // cudaGraphExecDestroy frees an in-flight graph on its completion).
  if (static_cast<int64_t>(graphs_.size()) >= max_graphs_) {
    auto lru = graphs_.begin();
    for (auto g = graphs_.begin(); g != graphs_.end(); ++g)
      if (g->second.last_use < lru->second.last_use) lru = g;
    cudaGraphExecDestroy(lru->second.exec);
    graphs_.erase(lru);
  }
  // First step of this shape: run eagerly (sizes every buffer), then capture the same work.
  const auto t0 = std::chrono::steady_clock::now();
  KILN_RETURN_IF_ERROR(run_layers(b, n, n, kv));
  const int64_t generation = g_scratch_generation, gemm_generation = gemm_.workspace_generation();
  KILN_RETURN_IF_ERROR(cuda_status(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "capture"));
  const Status captured = run_layers(b, n, n, kv);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
  if (!captured.ok() || end != cudaSuccess || generation != g_scratch_generation ||
      gemm_generation != gemm_.workspace_generation()) {
    if (graph) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    use_graphs_ = false;  // this model cannot be captured: stay eager (the eager result stands)
    log_warn("cuda graphs off: capture failed (", captured.ok() ? cudaGetErrorString(end) : captured.message(), ")");
    return ok_status();
  }
  size_t num_nodes = 0;
  int64_t other_nodes = 0;
  if (cudaGraphGetNodes(graph, nullptr, &num_nodes) == cudaSuccess) {
    std::vector<cudaGraphNode_t> nodes(num_nodes);
    if (cudaGraphGetNodes(graph, nodes.data(), &num_nodes) == cudaSuccess) {
      for (cudaGraphNode_t node : nodes) {
        cudaGraphNodeType type;
        other_nodes += cudaGraphNodeGetType(node, &type) != cudaSuccess || type != cudaGraphNodeTypeKernel;
      }
    }
  }
  last_graph_other_nodes_ = other_nodes;
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (inst != cudaSuccess) {
    use_graphs_ = false;
    log_warn("cuda graphs off: instantiate failed (", cudaGetErrorString(inst), ")");
    return ok_status();
  }
  graphs_[std::make_tuple(n, width, kv.k[0].data, generation, gemm_generation)] = {exec, ++graph_clock_};
  ++graph_captures_;
  log_info("decode graph for ", n, " tokens, table width ", width, ": eager step + capture in ",
           std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(), " ms (",
           num_nodes, " nodes, ", other_nodes, " not kernels; ", graphs_.size(), " held, ", graph_captures_,
           " captured)");
  return ok_status();
}

Status CudaLlamaModel::run_layers(const ForwardBatch& b, int64_t n, int64_t rows, const KvCacheView& kv) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  KILN_ASSIGN_OR_RETURN(Tensor residual, residual_.get(DType::kBF16, {n, hidden}));
  KILN_ASSIGN_OR_RETURN(Tensor h, h_.get(DType::kBF16, {n, hidden}));
  KILN_ASSIGN_OR_RETURN(Tensor x, x_.get(DType::kBF16, {n, hidden}));
  KILN_RETURN_IF_ERROR(embedding_cuda({ids_, w_.embed.tensor, residual}, stream_));
  KILN_RETURN_IF_ERROR(rmsnorm_cuda({residual, {}, w_.layers[0].attn_norm.tensor, h, c.rms_norm_eps}, stream_));
  // The norms also write h as per-token fp8 where the GEMM after them quantizes x so anyway (qkv
  // from layer 1 on: the first norm has no residual, and its row has no fp8 output).
  auto qkv_fp8 = [&](int64_t l) { return l > 0 && l < c.num_layers && x_fp8(w_.layers[static_cast<size_t>(l)].qkv.tensor, n); };
  auto with_fp8_out = [&](RmsNormArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(const HFp8 hq, hq_views(n));
    a.out_q = hq.q, a.out_scale = hq.scale;
    return ok_status();
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const CudaLayerWeights& lw = w_.layers[static_cast<size_t>(l)];
    KILN_RETURN_IF_ERROR(attention(lw, l, kv, n, qkv_fp8(l)));
    const bool fused = moe_fused_path(lw, n);
    const bool gate_up_fp8 = !fused && lw.experts.empty() && x_fp8(lw.gate_up.tensor, n);
    RmsNormArgs ffn_norm{x, residual, lw.ffn_norm.tensor, h, c.rms_norm_eps};
    // The residual's last writer is the norm before attention (or the embedding): at least qkv,
    // attention and o_proj launch after it, and the kernel just before this norm (o_proj) lets it
    // launch only after its own wait, so that writer has completed (see the field's comment: that
    // norm now triggers before its wait, so this holds only where another kernel sits between).
    ffn_norm.residual_written_earlier = true;
    MoeRouteArgs route;
    if (fused || gate_up_fp8) KILN_RETURN_IF_ERROR(with_fp8_out(ffn_norm));  // + per-token fp8 h
    if (fused) {  // + the router
      KILN_ASSIGN_OR_RETURN(route, moe_route_args(lw, n, moe_top_k()));
      ffn_norm.route = &route;
      ffn_norm.route_ids_cleared_early = moe_ids_poll(n);  // the gate_up GEMM polls for them
    }
    KILN_RETURN_IF_ERROR(rmsnorm_cuda(ffn_norm, stream_));
    MoeSlots slots;
    KILN_RETURN_IF_ERROR(ffn(lw, n, fused ? &slots : nullptr, gate_up_fp8));
    const Tensor& next = l + 1 < c.num_layers ? w_.layers[static_cast<size_t>(l + 1)].attn_norm.tensor : w_.norm.tensor;
    RmsNormArgs next_norm{x, residual, next, h, c.rms_norm_eps};
    next_norm.residual_written_earlier = true;  // by the ffn norm, before the ffn's GEMMs
    if (fused) next_norm.x = slots.y, next_norm.slot_weights = slots.weights;
    if (qkv_fp8(l + 1)) KILN_RETURN_IF_ERROR(with_fp8_out(next_norm));
    KILN_RETURN_IF_ERROR(rmsnorm_cuda(next_norm, stream_));
  }
  // The LM head's rows of h: h itself when they are all of them in order (a decode step), else
  // gathered (a copy per row: a node each in a graph, and a break in the PDL chain before the head).
  bool identity = rows == n;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t row = b.logits_rows[static_cast<size_t>(r)];
    if (row < 0 || row >= n) return invalid_argument("forward: logits row out of range");
    identity = identity && row == r;
  }
  Tensor sel = h;
  if (!identity) {
    KILN_ASSIGN_OR_RETURN(sel, rows_.get(DType::kBF16, {rows, hidden}));
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t row = b.logits_rows[static_cast<size_t>(r)];
      KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(sel.ptr<uint16_t>() + r * hidden, h.ptr<uint16_t>() + row * hidden,
                                                       static_cast<size_t>(hidden) * 2, cudaMemcpyDeviceToDevice, stream_),
                                       "row gather"));
    }
  }
  KILN_ASSIGN_OR_RETURN(Tensor dl, logits_.get(DType::kF32, {rows, c.vocab_size}));
  return gemm_.run({sel, w_.lm_head_view(), {}, dl}, stream_);
}

Result<KvCacheView> CudaLlamaModel::allocate_kv_cache(int64_t num_blocks, int64_t block_size) {
  const ModelConfig& c = config_;
  auto storage = std::make_shared<std::vector<DeviceTensor>>();
  KvCacheView view;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      KILN_ASSIGN_OR_RETURN(DeviceTensor t, DeviceTensor::empty(kv_dtype(), {num_blocks, block_size, c.num_kv_heads, c.head_dim}));
      KILN_RETURN_IF_ERROR(fill_bytes(t.tensor, 0, stream_));  // never-written slots read as 0, not NaN
      (kv == 0 ? view.k : view.v).push_back(t.tensor);
      storage->push_back(std::move(t));
    }
  }
  view.owner = storage;
  return view;
}

int64_t CudaLlamaModel::kv_block_bytes(int64_t block_size) const {
  const ModelConfig& c = config_;
  return 2 * c.num_layers * dtype_bytes(kv_dtype(), block_size * c.num_kv_heads * c.head_dim);
}

int64_t CudaLlamaModel::max_kv_blocks(int64_t block_size, double memory_fraction) const {
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) return 0;
  const int64_t per_block = kv_block_bytes(block_size);
  const double reserve = 2.0 * (1ll << 30);  // activations, cuBLAS workspace
  const double usable = std::max(0.0, static_cast<double>(free_bytes) * memory_fraction - reserve);
  return static_cast<int64_t>(usable / static_cast<double>(per_block));
}


}  // namespace cuda_llama

using cuda_llama::CudaLlamaModel;

Result<std::unique_ptr<Model>> create_cuda_model(LoadedModel&& loaded, const ModelOptions& options) {
  if (!cuda_available()) return unimplemented("--device cuda: no usable CUDA device (" + cuda_device_summary() + ")");
  log_info("cuda: ", cuda_device_summary());
  CudaDecoderWeights w;
  if (options.dummy_weights) {
    KILN_ASSIGN_OR_RETURN(w, dummy_decoder_weights(loaded.config, 1234, options));
  } else {
    KILN_ASSIGN_OR_RETURN(DecoderWeights host, build_decoder_weights(loaded, options));
    KILN_ASSIGN_OR_RETURN(w, upload_decoder_weights(host));
  }
  KILN_ASSIGN_OR_RETURN(Gemm gemm, Gemm::create());
  KILN_ASSIGN_OR_RETURN(CudaSampler sampler, CudaSampler::create());
  auto model = std::make_unique<CudaLlamaModel>(loaded.config, std::move(w), std::move(gemm), std::move(sampler), options);
  KILN_RETURN_IF_ERROR(model->init());
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace kiln
#endif