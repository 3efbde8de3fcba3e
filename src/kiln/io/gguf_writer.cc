// write_gguf_metadata: header, key/values (every GgufValueType, nested arrays), no tensor infos.
#include "kiln/io/gguf_writer.h"

#include <cstring>
#include <fstream>
#include <vector>

namespace kiln {
namespace {

using Bytes = std::vector<uint8_t>;

template <typename T>
void put(Bytes& b, T v) {
  const size_t at = b.size();
  b.resize(at + sizeof(T));
  std::memcpy(b.data() + at, &v, sizeof(T));
}

void put_string(Bytes& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

// The payload of one value of type t (no type tag).
Status put_value(Bytes& b, GgufValueType t, const GgufValue& v) {
  switch (t) {
    case GgufValueType::kUint8: put<uint8_t>(b, static_cast<uint8_t>(v.i)); break;
    case GgufValueType::kInt8: put<int8_t>(b, static_cast<int8_t>(v.i)); break;
    case GgufValueType::kUint16: put<uint16_t>(b, static_cast<uint16_t>(v.i)); break;
    case GgufValueType::kInt16: put<int16_t>(b, static_cast<int16_t>(v.i)); break;
    case GgufValueType::kUint32: put<uint32_t>(b, static_cast<uint32_t>(v.i)); break;
    case GgufValueType::kInt32: put<int32_t>(b, static_cast<int32_t>(v.i)); break;
    case GgufValueType::kFloat32: put<float>(b, static_cast<float>(v.f)); break;
    case GgufValueType::kBool: put<uint8_t>(b, v.i ? 1 : 0); break;
    case GgufValueType::kString: put_string(b, v.s); break;
    case GgufValueType::kUint64: put<uint64_t>(b, static_cast<uint64_t>(v.i)); break;
    case GgufValueType::kInt64: put<int64_t>(b, v.i); break;
    case GgufValueType::kFloat64: put<double>(b, v.f); break;
    case GgufValueType::kArray:
      put<uint32_t>(b, static_cast<uint32_t>(v.array_type));
      put<uint64_t>(b, v.array.size());
      for (const GgufValue& e : v.array) KILN_RETURN_IF_ERROR(put_value(b, v.array_type, e));
      break;
    default:
      return invalid_argument("gguf writer: unknown value type " + std::to_string(static_cast<uint32_t>(t)));
  }
  return ok_status();
}

}  // namespace

Status write_gguf_metadata(const std::string& path, const std::map<std::string, GgufValue>& metadata) {
  Bytes b;
  put<uint32_t>(b, 0x46554747u);  // "GGUF"
  put<uint32_t>(b, 3);
  put<uint64_t>(b, 0);  // tensors
  put<uint64_t>(b, metadata.size());
  for (const auto& [key, v] : metadata) {
    put_string(b, key);
    put<uint32_t>(b, static_cast<uint32_t>(v.type));
    Status s = put_value(b, v.type, v);
    if (!s.ok()) return s.with_context(path + ": key '" + key + "'");
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  out.close();
  if (!out) return Status(StatusCode::kUnavailable, path + ": cannot write");
  return ok_status();
}

}  // namespace kiln
