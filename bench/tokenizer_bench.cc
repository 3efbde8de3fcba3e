// Tokenizer throughput: encode MB/s of kiln, single-threaded, on tinyshakespeare.txt (1.1 MB),
// for each vocabulary given. "cold" is the first encode on a freshly loaded tokenizer (empty
// word cache), "warm" the best of several later ones. scripts/tokenizer_bench.py prints the same
// table for Hugging Face `tokenizers` to compare against.
//
// usage: tokenizer_bench [--text FILE] [--repeat N] MODEL...   (a .gguf or an HF directory)
// default: the shared test vocabularies and SmolLM2 when present.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/tokenizer/tokenizer.h"

namespace {

// ../shared beside the checkout (this file is <checkout>/bench/tokenizer_bench.cc).
std::string shared_dir() {
#ifdef KILN_SHARED_DIR
  return KILN_SHARED_DIR;
#else
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "shared").string();
#endif
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::string> default_models() {
  std::vector<std::string> models;
  const char* home = std::getenv("HOME");
  const std::string smollm2 = std::string(home ? home : "") + "/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (std::filesystem::exists(smollm2)) models.push_back(smollm2);
  for (const char* v : {"llama-spm", "gpt-2", "starcoder", "falcon", "deepseek-llm"}) {
    models.push_back(shared_dir() + "/testdata/vocab/ggml-vocab-" + v + ".gguf");
  }
  return models;
}

int bench_one(const std::string& path, const std::string& text, int repeat) {
  auto tok = kiln::load_tokenizer(path);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), tok.status().to_string().c_str());
    return 1;
  }
  const double mb = static_cast<double>(text.size()) / 1e6;
  auto t0 = std::chrono::steady_clock::now();
  auto ids = (*tok)->encode(text, false);
  const double cold = seconds_since(t0);
  if (!ids.ok()) return 1;
  double best = 1e30;
  for (int i = 0; i < repeat; ++i) {
    t0 = std::chrono::steady_clock::now();
    auto again = (*tok)->encode(text, false);
    best = std::min(best, seconds_since(t0));
  }
  t0 = std::chrono::steady_clock::now();
  const std::string back = (*tok)->decode(*ids);
  const double decode = seconds_since(t0);
  std::printf("%-28s %9zu %10.2f %10.2f %12.1f %s\n", std::filesystem::path(path).filename().string().c_str(),
              ids->size(), mb / cold, mb / best, mb / decode, back == text ? "" : "(round trip differs)");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string text_path = shared_dir() + "/testdata/text/tinyshakespeare.txt";
  int repeat = 5;
  std::vector<std::string> models;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--text" && i + 1 < argc) {
      text_path = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else {
      models.push_back(a);
    }
  }
  if (models.empty()) models = default_models();
  std::ifstream f(text_path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", text_path.c_str());
    return 1;
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  std::printf("kiln tokenizer, 1 thread, %s (%.2f MB)\n", text_path.c_str(), text.size() / 1e6);
  std::printf("%-28s %9s %10s %10s %12s\n", "vocabulary", "tokens", "cold MB/s", "warm MB/s", "decode MB/s");
  int rc = 0;
  for (const std::string& m : models) rc |= bench_one(m, text, repeat);
  return rc;
}
