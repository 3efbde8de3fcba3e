// Tensor views: contiguity, slicing, reshape errors.
#include "kiln/core/tensor.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(Tensor, ViewSliceReshape) {
  HostTensor h = HostTensor::zeros(DType::kBF16, {4, 6});
  EXPECT_EQ(h.tensor.numel(), 24);
  EXPECT_EQ(h.tensor.nbytes(), 48);
  EXPECT_TRUE(h.tensor.is_contiguous());
  EXPECT_EQ(h.tensor.strides[0], 6);
  Tensor s = h.tensor.slice0(1, 3);
  EXPECT_EQ(s.shape[0], 2);
  EXPECT_EQ(static_cast<char*>(s.data) - static_cast<char*>(h.tensor.data), 12);
  auto r = h.tensor.reshape({2, 12});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->shape[1], 12);
  EXPECT_FALSE(h.tensor.reshape({5, 5}).ok());
  EXPECT_EQ(h.tensor.shape_string(), "[4, 6] bf16 cpu");
  HostTensor q = HostTensor::zeros(DType::kInt4, {3, 5});
  EXPECT_EQ(q.tensor.nbytes(), 8);
}

TEST(Status, ResultCarriesErrors) {
  Result<int> good = 3;
  Result<int> bad = data_loss("x.gguf: truncated");
  EXPECT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().to_string(), "data loss: x.gguf: truncated");
  EXPECT_EQ(bad.status().with_context("load").message(), "load: x.gguf: truncated");
}

}  // namespace
}  // namespace kiln
