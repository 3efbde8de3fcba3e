// Kernel timeline by CUPTI activity records, as a CUDA injection library: run any kiln command with
//   CUDA_INJECTION64_PATH=build/libkiln_kernel_trace.so KILN_KERNEL_TRACE=trace.tsv kiln generate ...
// and every kernel the process runs (CUDA graph replays and programmatic dependent launches
// included; CONCURRENT_KERNEL records do not serialize kernels) is written at exit as one line
//   start_ns <TAB> end_ns <TAB> stream <TAB> grid x*y*z <TAB> block x <TAB> demangled name
// in start order. scripts/kernel_trace_chain.py turns the file into each kernel's share of a step:
// how much later the step's chain of kernels ends because of it (end minus the previous end).
// Only a measuring tool: kiln does not link it. Errors go to stderr; the process goes on untraced.
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Record {
  uint64_t start, end;
  uint32_t stream;
  uint32_t grid, block;
  std::string name;
};

std::mutex g_mu;
std::vector<Record> g_records;
constexpr size_t kBufferBytes = 8u << 20;

bool check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return true;
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  std::fprintf(stderr, "kernel_trace: %s: %s\n", what, msg ? msg : "?");
  return false;
}

std::string demangle(const char* mangled) {
  int status = 0;
  char* s = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string out = status == 0 && s ? s : mangled;
  std::free(s);
  return out;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::vector<Record> got;
  while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
    got.push_back({k->start, k->end, k->streamId, static_cast<uint32_t>(k->gridX * k->gridY * k->gridZ),
                   static_cast<uint32_t>(k->blockX), demangle(k->name)});
  }
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped);
  if (dropped) std::fprintf(stderr, "kernel_trace: %zu records dropped\n", dropped);
  std::free(buffer);
  std::lock_guard<std::mutex> lock(g_mu);
  g_records.insert(g_records.end(), std::make_move_iterator(got.begin()), std::make_move_iterator(got.end()));
}

void write_trace() {
  cuptiActivityFlushAll(1);
  const char* path = std::getenv("KILN_KERNEL_TRACE");
  std::lock_guard<std::mutex> lock(g_mu);
  std::sort(g_records.begin(), g_records.end(), [](const Record& a, const Record& b) { return a.start < b.start; });
  FILE* f = std::fopen(path && *path ? path : "kernel_trace.tsv", "w");
  if (!f) {
    std::fprintf(stderr, "kernel_trace: cannot write %s\n", path && *path ? path : "kernel_trace.tsv");
    return;
  }
  for (const Record& r : g_records)
    std::fprintf(f, "%llu\t%llu\t%u\t%u\t%u\t%s\n", static_cast<unsigned long long>(r.start),
                 static_cast<unsigned long long>(r.end), r.stream, r.grid, r.block, r.name.c_str());
  std::fclose(f);
  std::fprintf(stderr, "kernel_trace: %zu kernels -> %s\n", g_records.size(), path && *path ? path : "kernel_trace.tsv");
}

}  // namespace

// Called by the CUDA driver when CUDA_INJECTION64_PATH names this library.
// Returns 1 when the recording is set up, 0 when it is not (the process then runs untraced).
extern "C" int InitializeInjection() {
  if (!check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "register callbacks")) return 0;
  if (!check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enable kernel records")) return 0;
  std::atexit(write_trace);
  return 1;
}
