// MappedFile: contents, empty files, and errors that name the path.
#include "kiln/io/mapped_file.h"

#include <gtest/gtest.h>

#include "gguf_test_writer.h"

namespace kiln {
namespace {

TEST(MappedFile, MapsContents) {
  const io_test::TempDir tmp("mapped_file");
  const std::string& dir = tmp.path;
  io_test::GgufTestWriter::write_file(dir + "/a.bin", {1, 2, 3, 250});
  Result<MappedFile> f = MappedFile::open(dir + "/a.bin");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  ASSERT_EQ(f->size(), 4u);
  EXPECT_EQ(f->data()[3], 250);
  MappedFile moved = std::move(f).value();
  EXPECT_EQ(moved.size(), 4u);
  EXPECT_EQ(moved.data()[0], 1);
  EXPECT_EQ(moved.path(), dir + "/a.bin");
}

TEST(MappedFile, EmptyFile) {
  const io_test::TempDir tmp("mapped_file_empty");
  const std::string& dir = tmp.path;
  io_test::GgufTestWriter::write_file(dir + "/empty.bin", {});
  Result<MappedFile> f = MappedFile::open(dir + "/empty.bin");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->size(), 0u);
}

TEST(MappedFile, ErrorsNameThePath) {
  const io_test::TempDir tmp("mapped_file_err");
  const std::string& dir = tmp.path;
  Result<MappedFile> missing = MappedFile::open(dir + "/nope.bin");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir + "/nope.bin"), std::string::npos);
  Result<MappedFile> d = MappedFile::open(dir);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("is a directory"), std::string::npos);
}

}  // namespace
}  // namespace kiln
