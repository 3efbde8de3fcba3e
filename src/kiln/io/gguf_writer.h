// Writing a metadata-only GGUF v3 file (no tensors): how `kiln quantize` carries the tokenizer
// of a GGUF model ("tokenizer.ggml.*" and the rest of its metadata) into a safetensors directory.
// GgufFile::open reads it back (tokenizer.cc's load_tokenizer accepts vocab-only files).
#pragma once
#include <map>
#include <string>

#include "kiln/core/status.h"
#include "kiln/io/gguf.h"

namespace kiln {

Status write_gguf_metadata(const std::string& path, const std::map<std::string, GgufValue>& metadata);

}  // namespace kiln
