// Safetensors reader (validated header over a memory map) and writer (header padded to 8 bytes).
// Layout: u64 little-endian header length N, N bytes of JSON, then the data section; each tensor's
// data_offsets are [begin, end) relative to the data section.
#include "kiln/io/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <limits>

#include <nlohmann/json.hpp>

namespace kiln {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit (100 MB)

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypeNames[] = {
    {"F32", DType::kF32},         {"F16", DType::kF16},         {"BF16", DType::kBF16},
    {"F8_E4M3", DType::kFp8E4M3}, {"F8_E5M2", DType::kFp8E5M2}, {"I8", DType::kInt8},
    {"I32", DType::kInt32},       {"I64", DType::kInt64},
};

Result<DType> dtype_from_safetensors(const std::string& s) {
  for (const auto& d : kDTypeNames) {
    if (s == d.name) return d.dtype;
  }
  return data_loss("unknown dtype '" + s + "' (supported: F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I32, I64)");
}

const char* safetensors_dtype_name(DType t) {
  for (const auto& d : kDTypeNames) {
    if (t == d.dtype) return d.name;
  }
  return nullptr;
}

// One tensor entry of the header: {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}.
Result<SafetensorsTensor> parse_entry(const std::string& name, const nlohmann::json& e,
                                      const uint8_t* data, uint64_t data_size) {
  const std::string where = "tensor '" + name + "': ";
  if (!e.is_object()) return data_loss(where + "entry is not an object");
  auto dt = e.find("dtype");
  auto sh = e.find("shape");
  auto off = e.find("data_offsets");
  if (dt == e.end() || !dt->is_string()) return data_loss(where + "missing or non-string dtype");
  if (sh == e.end() || !sh->is_array()) return data_loss(where + "missing or non-array shape");
  if (off == e.end() || !off->is_array() || off->size() != 2) {
    return data_loss(where + "data_offsets must be [begin, end]");
  }
  SafetensorsTensor t;
  t.name = name;
  Result<DType> dtype = dtype_from_safetensors(dt->get<std::string>());
  if (!dtype.ok()) return data_loss(where + dtype.status().message());
  t.dtype = *dtype;
  if (sh->size() > static_cast<size_t>(kMaxDims)) {
    return data_loss(where + "rank " + std::to_string(sh->size()) + " > " + std::to_string(kMaxDims));
  }
  // numel * element size must not overflow; the data section bounds every real tensor.
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) return data_loss(where + "shape entries must be non-negative integers");
    const uint64_t v = d.get<uint64_t>();
    if (v != 0 && numel > data_size / v + 1) return data_loss(where + "shape is larger than the file");
    numel *= v;
    t.shape.push_back(static_cast<int64_t>(v));
  }
  for (const auto& o : *off) {
    if (!o.is_number_unsigned()) return data_loss(where + "data_offsets must be non-negative integers");
  }
  const uint64_t begin = (*off)[0].get<uint64_t>();
  const uint64_t end = (*off)[1].get<uint64_t>();
  if (begin > end || end > data_size) {
    return data_loss(where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") outside the data section of " + std::to_string(data_size) + " bytes");
  }
  const uint64_t expect = static_cast<uint64_t>(dtype_bytes(t.dtype, static_cast<int64_t>(numel)));
  if (end - begin != expect) {
    return data_loss(where + "holds " + std::to_string(end - begin) + " bytes but its shape and dtype need " +
                     std::to_string(expect));
  }
  const uint64_t elem = static_cast<uint64_t>(dtype_bits(t.dtype) / 8);
  if (elem > 1 && begin % elem != 0) {
    return data_loss(where + "data offset " + std::to_string(begin) + " is not aligned to its element size");
  }
  t.nbytes = static_cast<int64_t>(end - begin);
  t.data = data + begin;
  return t;
}

}  // namespace

Tensor SafetensorsTensor::view() const {
  return Tensor::view(const_cast<uint8_t*>(data), dtype, shape.data(), static_cast<int>(shape.size()));
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  SafetensorsFile f;
  f.file_ = std::make_shared<MappedFile>(std::move(mapped));
  const uint8_t* base = f.file_->data();
  const uint64_t size = f.file_->size();
  auto fail = [&](const std::string& m) { return data_loss(path + ": " + m); };

  if (size < 8) return fail("truncated: " + std::to_string(size) + " bytes, no header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > kMaxHeaderBytes) return fail("header length " + std::to_string(header_len) + " > 100 MB");
  if (header_len > size - 8) {
    return fail("truncated: header of " + std::to_string(header_len) + " bytes, file has " +
                std::to_string(size - 8) + " after the length");
  }
  const char* text = reinterpret_cast<const char*>(base + 8);
  nlohmann::json header = nlohmann::json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return fail("malformed JSON header");
  if (!header.is_object()) return fail("JSON header is not an object");

  const uint64_t data_size = size - 8 - header_len;
  const uint8_t* data = base + 8 + header_len;
  try {
    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        if (!value.is_object()) return fail("__metadata__ is not an object");
        for (const auto& [mk, mv] : value.items()) f.metadata_[mk] = mv.is_string() ? mv.get<std::string>() : mv.dump();
        continue;
      }
      Result<SafetensorsTensor> t = parse_entry(key, value, data, data_size);
      if (!t.ok()) return t.status().with_context(path);
      f.index_[key] = f.tensors_.size();
      f.tensors_.push_back(std::move(t).value());
    }
  } catch (const std::exception& e) {  // nlohmann type errors on a header of the wrong shape
    return fail(std::string("malformed JSON header: ") + e.what());
  }

  // No two tensors may share bytes.
  std::vector<const SafetensorsTensor*> by_offset;
  for (const auto& t : f.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->data < b->data; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    if (prev->nbytes > 0 && prev->data + prev->nbytes > by_offset[i]->data) {
      return fail("tensors '" + prev->name + "' and '" + by_offset[i]->name + "' overlap");
    }
  }
  return f;
}

Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const char* dt = safetensors_dtype_name(t.dtype);
    if (!dt) return invalid_argument(path + ": tensor '" + name + "': dtype " + std::string(dtype_name(t.dtype)) + " has no safetensors name");
    if (t.device != Device::kCpu || !t.is_contiguous() || (t.numel() > 0 && !t.data)) {
      return invalid_argument(path + ": tensor '" + name + "' is not a contiguous host tensor");
    }
    if (name == "__metadata__" || header.contains(name)) return invalid_argument(path + ": duplicate tensor name '" + name + "'");
    nlohmann::ordered_json shape = nlohmann::ordered_json::array();
    for (int i = 0; i < t.ndim; ++i) shape.push_back(t.shape[static_cast<size_t>(i)]);
    if (t.ndim == 0) shape.push_back(0);  // kiln's rank-0 tensor is empty, not a scalar
    const uint64_t n = static_cast<uint64_t>(t.ndim == 0 ? 0 : t.nbytes());
    header[name] = {{"dtype", dt}, {"shape", shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::FILE* fp = std::fopen(path.c_str(), "wb");
  if (!fp) return invalid_argument(path + ": cannot open for writing");
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, fp) == 8 && std::fwrite(text.data(), 1, text.size(), fp) == text.size();
  for (const auto& [name, t] : tensors) {
    const size_t n = static_cast<size_t>(t.ndim == 0 ? 0 : t.nbytes());
    if (ok && n > 0) ok = std::fwrite(t.data, 1, n, fp) == n;
  }
  ok = (std::fclose(fp) == 0) && ok;
  if (!ok) return internal_error(path + ": write failed (disk full?)");
  return ok_status();
}

}  // namespace kiln
