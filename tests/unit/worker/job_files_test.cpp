// The files a job leaves (services/worker/src/job_files.hpp): its outputs'
// listing, its folders, its log and its metadata, on a real file system.
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "job_files.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::worker::list_outputs;
using conveyor::worker::LogFile;
using conveyor::worker::make_dirs;
using conveyor::worker::write_json_file;

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
  static std::string read(const fs::path& p) {
    std::ostringstream out;
    out << std::ifstream(p).rdbuf();
    return out.str();
  }
  // The lines of `text`, each without its time stamp (the first word).
  static std::vector<std::string> untimed_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line.substr(line.find(' ') + 1));
    return lines;
  }
  // The flags of this process's descriptor open on `path` (fdinfo, octal:
  // O_CLOEXEC is 02000000, O_APPEND 02000); 0 when none is.
  static unsigned long open_flags(const fs::path& path) {
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      if (fs::read_symlink(e.path(), ec) != path) continue;
      const std::string info = read("/proc/self/fdinfo/" + e.path().filename().string());
      const auto at = info.find("flags:");
      return at == std::string::npos ? 0 : std::stoul(info.substr(at + 6), nullptr, 8);
    }
    return 0;
  }
  // The descriptors this process has open on files under root_.
  int open_under_root() const {
    int n = 0;
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      const fs::path target = fs::read_symlink(e.path(), ec);
      if (!ec && target.string().rfind(root_.string(), 0) == 0) ++n;
    }
    return n;
  }

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

// A job's log: its folder made, each line appended whole with its stream,
// a retried job's log appended to, the descriptor closed with the LogFile
// and never inherited by a program the worker starts (close-on-exec).
TEST_F(JobFilesTest, ALogAppendsWholeLinesAndKeepsWhatAnEarlierAttemptWrote) {
  const fs::path path = root_ / "logs" / "2026-12" / "job-7" / "logs.txt";
  {
    LogFile log(path);
    log.write("conveyor", "attempt 1 of 2");
    log.write("stdout", "hello");
    EXPECT_EQ(open_under_root(), 1);
    const unsigned long flags = open_flags(path);
    EXPECT_NE(flags & 02000000UL, 0UL) << "not close-on-exec: " << std::oct << flags;
    EXPECT_NE(flags & 02000UL, 0UL) << "not O_APPEND: " << std::oct << flags;
  }
  EXPECT_EQ(open_under_root(), 0);
  LogFile(path).write("stderr", "second attempt");
  const std::string text = read(path);
  EXPECT_EQ(untimed_lines(text),
            (std::vector<std::string>{"conveyor attempt 1 of 2", "stdout hello", "stderr second attempt"}))
      << text;
  EXPECT_EQ(text.substr(0, 2), "20") << "a time stamp first: " << text;
}

TEST_F(JobFilesTest, ALogThatCannotBeOpenedNamesItsPath) {
  touch(root_ / "job-8");  // a file where the job's folder goes
  try {
    LogFile log(root_ / "job-8" / "logs.txt");
    FAIL() << "opened";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find((root_ / "job-8" / "logs.txt").string()), std::string::npos) << e.what();
  }
}

// metadata.json is replaced whole (a temporary file renamed over it), its
// folder made when missing, and no temporary file is left.
TEST_F(JobFilesTest, MetadataIsWrittenWholeAndReplacesTheEarlierAttempts) {
  const fs::path path = root_ / "logs" / "2026-12" / "job-9" / "metadata.json";
  write_json_file(path, {{"attempt", 0}, {"message", "first"}});
  write_json_file(path, {{"attempt", 1}});
  EXPECT_EQ(nlohmann::json::parse(read(path)), (nlohmann::json{{"attempt", 1}}));
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  EXPECT_EQ(open_under_root(), 0);
  touch(root_ / "job-10");
  EXPECT_THROW(write_json_file(root_ / "job-10" / "metadata.json", {{"a", 1}}), std::exception);
}

}  // namespace
