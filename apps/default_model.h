// Where kiln finds its default model (SmolLM2-135M-Instruct, fetched by scripts/setup.sh).
#pragma once
#include <cstdlib>
#include <string>

namespace kiln::apps {

inline std::string default_model_path() {
  if (const char* m = std::getenv("KILN_MODEL")) return m;
  std::string dir;
  if (const char* d = std::getenv("KILN_MODEL_DIR")) dir = d;
  else if (const char* h = std::getenv("HOME")) dir = std::string(h) + "/.cache/kiln/models";
  else dir = ".cache/kiln/models";
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace kiln::apps
