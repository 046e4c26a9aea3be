// The files a job leaves (services/worker/src/job_files.hpp): its outputs'
// listing and its folders, on a real file system.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "job_files.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::worker::list_outputs;
using conveyor::worker::make_dirs;

class JobFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("conveyor-job-files-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  static void touch(const fs::path& p) { std::ofstream(p) << "x"; }

  fs::path root_;
};

TEST_F(JobFilesTest, OutputsAreTheRegularFilesUnderTheFolderSortedAndAbsolute) {
  const fs::path out = root_ / "outputs" / "job-7";
  fs::create_directories(out / "tiles" / "T31TCJ");
  touch(out / "b.tif");
  touch(out / "a.json");
  touch(out / "tiles" / "T31TCJ" / "c.tif");
  fs::create_directories(out / "empty");
  touch(root_ / "elsewhere.txt");
  fs::create_symlink(root_ / "elsewhere.txt", out / "link-to-file");
  fs::create_symlink(root_, out / "link-to-folder");  // not entered: it would list the root
  fs::create_symlink(root_ / "gone", out / "dangling");

  const std::vector<std::string> expected = {(out / "a.json").string(), (out / "b.tif").string(),
                                             (out / "link-to-file").string(),
                                             (out / "tiles" / "T31TCJ" / "c.tif").string()};
  EXPECT_EQ(list_outputs(out), expected);
  EXPECT_EQ(list_outputs(out.string() + "/"), expected) << "a trailing slash names the same folder";
  EXPECT_TRUE(list_outputs(root_ / "missing").empty());
  EXPECT_TRUE(list_outputs(out / "b.tif").empty()) << "a file is no folder";
}

TEST_F(JobFilesTest, OutputsOfARelativeFolderAreAbsolute) {
  fs::create_directories(root_ / "rel");
  touch(root_ / "rel" / "f");
  const fs::path before = fs::current_path();
  fs::current_path(root_);
  const auto files = list_outputs("rel");
  fs::current_path(before);
  EXPECT_EQ(files, std::vector<std::string>{(root_ / "rel" / "f").string()});
}

TEST_F(JobFilesTest, MakeDirsCreatesTheFolderItsMissingParentsAndAcceptsOneThatExists) {
  std::error_code ec;
  make_dirs(root_ / "logs" / "2026-12" / "job-9", ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(fs::is_directory(root_ / "logs" / "2026-12" / "job-9"));
  make_dirs(root_ / "logs" / "2026-12" / "job-10/", ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(fs::is_directory(root_ / "logs" / "2026-12" / "job-10"));
  make_dirs(root_ / "logs" / "2026-12" / "job-9", ec);
  EXPECT_FALSE(ec) << "a folder that exists is fine: " << ec.message();
}

TEST_F(JobFilesTest, MakeDirsRefusesAFileInTheWay) {
  touch(root_ / "job-3");
  std::error_code ec;
  make_dirs(root_ / "job-3", ec);
  EXPECT_TRUE(ec) << "a file has the folder's name";
  make_dirs(root_ / "job-3" / "sub", ec);
  EXPECT_TRUE(ec) << "a file has the parent's name";
}

}  // namespace
