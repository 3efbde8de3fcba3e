// GGUF reader. File layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count,
// kv_count x (string key, u32 type, value), tensor_count x (string name, u32 n_dims,
// u64 ne[n_dims], u32 ggml_type, u64 offset), padding to general.alignment (default 32), data.
// A string is u64 length + bytes; an array is u32 element type + u64 count + elements.
// Every count and length is checked against the bytes left before anything is allocated.
#include "kiln/io/gguf.h"

#include <limits>

#include "kiln/io/ggml_quant.h"

namespace kiln {
namespace {

constexpr uint32_t kMaxArrayDepth = 8;
// Total metadata array elements kept; real files hold a few vocabularies (< 2M elements).
constexpr uint64_t kMaxMetadataElements = 16ull << 20;
constexpr uint32_t kMaxDimsGguf = 4;

const char* value_type_name(GgufValueType t) {
  static const char* kNames[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32", "float32",
                                 "bool",  "string", "array",  "uint64", "int64",  "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? kNames[i] : "unknown";
}

bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kUint16:
    case GgufValueType::kInt16: case GgufValueType::kUint32: case GgufValueType::kInt32:
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kBool:
      return true;
    default:
      return false;
  }
}
bool is_float(GgufValueType t) { return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64; }

// Smallest encoding of one value of type t, used to bound array counts.
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64:
    case GgufValueType::kString: return 8;
    case GgufValueType::kArray: return 12;
  }
  return 1;
}

// Bounds-checked cursor over the mapped file. Errors name the file and the offset.
class Reader {
 public:
  Reader(const uint8_t* base, uint64_t size, const std::string& path) : base_(base), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  Status fail(const std::string& m) const {
    return data_loss(path_ + ": " + m + " (at offset " + std::to_string(pos_) + ")");
  }
  Status fail_no_offset(const std::string& m) const { return data_loss(path_ + ": " + m); }

  template <typename T>
  Status read(T* out, const char* what) {
    if (remaining() < sizeof(T)) return fail(std::string("truncated reading ") + what);
    T v{};
    for (size_t i = 0; i < sizeof(T); ++i) {
      reinterpret_cast<uint8_t*>(&v)[i] = base_[pos_ + i];  // little-endian host
    }
    pos_ += sizeof(T);
    *out = v;
    return ok_status();
  }

  Status read_string(std::string* out, const char* what) {
    uint64_t len = 0;
    KILN_RETURN_IF_ERROR(read(&len, what));
    if (len > remaining()) {
      return fail(std::string(what) + " length " + std::to_string(len) + " exceeds the " +
                  std::to_string(remaining()) + " bytes left");
    }
    out->assign(reinterpret_cast<const char*>(base_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return ok_status();
  }

  Status read_value(GgufValueType type, GgufValue* v, uint32_t depth);

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
  uint64_t elements_ = 0;
};

template <typename T>
Status read_int(Reader& r, GgufValue* v) {
  T x{};
  KILN_RETURN_IF_ERROR(r.read(&x, "integer value"));
  v->i = static_cast<int64_t>(x);
  return ok_status();
}

Status Reader::read_value(GgufValueType type, GgufValue* v, uint32_t depth) {
  v->type = type;
  switch (type) {
    case GgufValueType::kUint8: return read_int<uint8_t>(*this, v);
    case GgufValueType::kInt8: return read_int<int8_t>(*this, v);
    case GgufValueType::kUint16: return read_int<uint16_t>(*this, v);
    case GgufValueType::kInt16: return read_int<int16_t>(*this, v);
    case GgufValueType::kUint32: return read_int<uint32_t>(*this, v);
    case GgufValueType::kInt32: return read_int<int32_t>(*this, v);
    case GgufValueType::kUint64: return read_int<uint64_t>(*this, v);
    case GgufValueType::kInt64: return read_int<int64_t>(*this, v);
    case GgufValueType::kBool: {
      uint8_t b = 0;
      KILN_RETURN_IF_ERROR(read(&b, "bool value"));
      if (b > 1) return fail("bool value " + std::to_string(b));
      v->i = b;
      return ok_status();
    }
    case GgufValueType::kFloat32: {
      float f = 0;
      KILN_RETURN_IF_ERROR(read(&f, "float32 value"));
      v->f = f;
      return ok_status();
    }
    case GgufValueType::kFloat64: return read(&v->f, "float64 value");
    case GgufValueType::kString: return read_string(&v->s, "string value");
    case GgufValueType::kArray: {
      if (depth >= kMaxArrayDepth) return fail("arrays nested deeper than " + std::to_string(kMaxArrayDepth));
      uint32_t elem_type = 0;
      uint64_t count = 0;
      KILN_RETURN_IF_ERROR(read(&elem_type, "array element type"));
      if (elem_type > static_cast<uint32_t>(GgufValueType::kFloat64)) {
        return fail("unknown array element type " + std::to_string(elem_type));
      }
      v->array_type = static_cast<GgufValueType>(elem_type);
      KILN_RETURN_IF_ERROR(read(&count, "array length"));
      if (count > remaining() / min_value_bytes(v->array_type)) {
        return fail("array of " + std::to_string(count) + " " + value_type_name(v->array_type) +
                    " exceeds the " + std::to_string(remaining()) + " bytes left");
      }
      elements_ += count;
      if (elements_ > kMaxMetadataElements) {
        return fail("metadata arrays hold more than " + std::to_string(kMaxMetadataElements) + " elements");
      }
      v->array.resize(static_cast<size_t>(count));
      for (auto& e : v->array) KILN_RETURN_IF_ERROR(read_value(v->array_type, &e, depth + 1));
      return ok_status();
    }
  }
  return fail("unknown value type " + std::to_string(static_cast<uint32_t>(type)));
}

}  // namespace

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

// Reads the tensor-info table and places every tensor in the data section.
Status read_tensor_infos(Reader& r, uint64_t count, const uint8_t* base, uint64_t file_size,
                         uint64_t alignment, std::vector<GgufTensorInfo>* tensors,
                         std::map<std::string, size_t>* index) {
  std::vector<uint64_t> offsets;
  for (uint64_t k = 0; k < count; ++k) {
    GgufTensorInfo t;
    uint32_t n_dims = 0, type = 0;
    uint64_t offset = 0;
    KILN_RETURN_IF_ERROR(r.read_string(&t.name, "tensor name"));
    KILN_RETURN_IF_ERROR(r.read(&n_dims, "tensor rank"));
    if (n_dims == 0 || n_dims > kMaxDimsGguf) {
      return r.fail("tensor '" + t.name + "' has rank " + std::to_string(n_dims) + " (1..4 allowed)");
    }
    t.shape.resize(n_dims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      KILN_RETURN_IF_ERROR(r.read(&ne, "tensor dimension"));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / 8) ||
          (ne > 0 && numel > std::numeric_limits<int64_t>::max() / 8 / static_cast<int64_t>(ne))) {
        return r.fail("tensor '" + t.name + "' has an impossible size");
      }
      numel *= static_cast<int64_t>(ne);
      t.shape[n_dims - 1 - d] = static_cast<int64_t>(ne);  // ne[0] is the innermost dim
    }
    KILN_RETURN_IF_ERROR(r.read(&type, "tensor type"));
    KILN_RETURN_IF_ERROR(r.read(&offset, "tensor offset"));
    t.type = static_cast<GgmlType>(type);
    if (index->count(t.name)) return r.fail("duplicate tensor '" + t.name + "'");
    if (offset % alignment != 0) {
      return r.fail("tensor '" + t.name + "' offset " + std::to_string(offset) + " is not a multiple of the alignment " +
                    std::to_string(alignment));
    }
    if (ggml_type_info(t.type)) {
      const int64_t row = ggml_row_bytes(t.type, t.shape.back());
      if (row < 0) {
        return r.fail("tensor '" + t.name + "': ne[0] = " + std::to_string(t.shape.back()) +
                      " is not a multiple of the " + ggml_type_name(t.type) + " block size");
      }
      t.nbytes = t.shape.back() == 0 ? 0 : row * (numel / t.shape.back());
    }  // else: unknown type, nbytes stays 0 and dequantize() refuses it
    (*index)[t.name] = tensors->size();
    tensors->push_back(std::move(t));
    offsets.push_back(offset);
  }
  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  for (size_t k = 0; k < tensors->size(); ++k) {
    GgufTensorInfo& t = (*tensors)[k];
    const uint64_t nbytes = static_cast<uint64_t>(t.nbytes);
    if (data_start > file_size || offsets[k] > file_size - data_start || nbytes > file_size - data_start - offsets[k]) {
      return r.fail_no_offset("tensor '" + t.name + "' data [" + std::to_string(data_start + offsets[k]) + ", +" +
                              std::to_string(nbytes) + ") runs past the end of the file (" +
                              std::to_string(file_size) + " bytes)");
    }
    t.data = base + data_start + offsets[k];
  }
  return ok_status();
}

}  // namespace

Result<GgufFile> GgufFile::open(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  GgufFile f;
  f.file_ = std::make_shared<MappedFile>(std::move(mapped));
  const std::string& p = f.file_->path();
  Reader r(f.file_->data(), f.file_->size(), p);

  uint32_t magic = 0;
  KILN_RETURN_IF_ERROR(r.read(&magic, "magic"));
  if (magic != 0x46554747u) return data_loss(p + ": bad magic (not a GGUF file)");
  KILN_RETURN_IF_ERROR(r.read(&f.version_, "version"));
  if (f.version_ != 2 && f.version_ != 3) {
    return unimplemented(p + ": unsupported GGUF version " + std::to_string(f.version_) + " (supported: 2, 3)");
  }
  uint64_t tensor_count = 0, kv_count = 0;
  KILN_RETURN_IF_ERROR(r.read(&tensor_count, "tensor count"));
  KILN_RETURN_IF_ERROR(r.read(&kv_count, "metadata count"));
  // A key/value needs >= 13 bytes (key length, type, 1 byte); a tensor info >= 24.
  if (kv_count > r.remaining() / 13) return r.fail("metadata count " + std::to_string(kv_count) + " exceeds the file");
  if (tensor_count > r.remaining() / 24) return r.fail("tensor count " + std::to_string(tensor_count) + " exceeds the file");

  for (uint64_t k = 0; k < kv_count; ++k) {
    std::string key;
    uint32_t type = 0;
    KILN_RETURN_IF_ERROR(r.read_string(&key, "metadata key"));
    KILN_RETURN_IF_ERROR(r.read(&type, "metadata value type"));
    if (type > static_cast<uint32_t>(GgufValueType::kFloat64)) {
      return r.fail("key '" + key + "' has unknown value type " + std::to_string(type));
    }
    if (f.metadata_.count(key)) return r.fail("duplicate key '" + key + "'");
    GgufValue v;
    KILN_RETURN_IF_ERROR(r.read_value(static_cast<GgufValueType>(type), &v, 0));
    f.metadata_.emplace(std::move(key), std::move(v));
  }

  uint64_t alignment = 32;
  if (const GgufValue* a = f.find("general.alignment")) {
    if (!is_integer(a->type) || a->i <= 0 || (a->i & (a->i - 1)) != 0) {
      return data_loss(p + ": general.alignment must be a positive power of two");
    }
    alignment = static_cast<uint64_t>(a->i);
  }
  KILN_RETURN_IF_ERROR(
      read_tensor_infos(r, tensor_count, f.file_->data(), f.file_->size(), alignment, &f.tensors_, &f.index_));
  return f;
}

Status GgufFile::dequantize(const GgufTensorInfo& t, DType dst, void* out) const {
  if (!ggml_can_dequantize(t.type)) {
    return unimplemented(path() + ": tensor '" + t.name + "' has type " + ggml_type_name(t.type) + " (" +
                         std::to_string(static_cast<uint32_t>(t.type)) + "); supported: " + ggml_dequantizable_names());
  }
  Status s = dequantize_ggml(t.type, t.data, t.numel(), dst, out);
  return s.ok() ? s : s.with_context(path() + ": tensor '" + t.name + "'");
}

// ---- typed getters ---------------------------------------------------------------------------

namespace {
Status wrong_type(const std::string& path, const std::string& key, const GgufValue& v, const char* want) {
  std::string have = value_type_name(v.type);
  if (v.type == GgufValueType::kArray) have += std::string(" of ") + value_type_name(v.array_type);
  return data_loss(path + ": key '" + key + "' is " + have + ", expected " + want);
}
Status missing_key(const std::string& path, const std::string& key) {
  return not_found(path + ": missing key '" + key + "'");
}
}  // namespace

Result<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path(), key);
  if (v->type != GgufValueType::kString) return wrong_type(path(), key, *v, "string");
  return v->s;
}

Result<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path(), key);
  if (!is_integer(v->type)) return wrong_type(path(), key, *v, "integer");
  return v->i;
}

Result<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path(), key);
  if (is_float(v->type)) return v->f;
  if (is_integer(v->type)) return static_cast<double>(v->i);
  return wrong_type(path(), key, *v, "number");
}

Result<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path(), key);
  if (v->type != GgufValueType::kArray || v->array_type != GgufValueType::kString) {
    return wrong_type(path(), key, *v, "array of string");
  }
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) out.push_back(e.s);
  return out;
}

Result<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path(), key);
  if (v->type != GgufValueType::kArray || !(is_float(v->array_type) || is_integer(v->array_type))) {
    return wrong_type(path(), key, *v, "array of number");
  }
  std::vector<double> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) out.push_back(is_float(e.type) ? e.f : static_cast<double>(e.i));
  return out;
}

Result<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path(), key);
  if (v->type != GgufValueType::kArray || !is_integer(v->array_type)) {
    return wrong_type(path(), key, *v, "array of integer");
  }
  std::vector<int64_t> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) out.push_back(e.i);
  return out;
}

}  // namespace kiln
