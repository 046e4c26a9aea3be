#include "job_files.hpp"

#include <fmt/format.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <system_error>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job.hpp"

namespace conveyor::worker {

namespace fs = std::filesystem;

fs::path log_dir(const fs::path& data_dir, const std::string& month, std::int64_t job_id) {
  return model::job_log_dir(data_dir, month, job_id);
}

fs::path output_dir(const fs::path& data_dir, std::int64_t job_id) { return model::job_output_dir(data_dir, job_id); }

std::string rfc3339_ms(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch());
  const std::time_t secs = static_cast<std::time_t>(ms.count() / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms.count() % 1000));
}

bool is_secret_name(std::string_view name) {
  std::string upper(name);
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  for (std::string_view word : {"SECRET", "PASSWORD", "TOKEN", "KEY"}) {
    if (upper.find(word) != std::string::npos) return true;
  }
  return false;
}

nlohmann::json redact_env(const std::map<std::string, std::string>& env) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, v] : env) out[k] = is_secret_name(k) ? std::string("****") : v;
  return out;
}

namespace {

// Appends the regular files under the folder `dir` (named `path`) to
// `files`: readdir's entry types, a stat only for a link or a file system
// that gives none. A folder that cannot be read is skipped.
void add_files(const fs::path& path, std::vector<std::string>& files) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    fs::path child = path / name;
    unsigned char type = entry->d_type;
    if (type == DT_LNK || type == DT_UNKNOWN) {
      std::error_code ec;
      const bool link = type == DT_LNK || fs::is_symlink(fs::symlink_status(child, ec));
      const fs::file_status st = fs::status(child, ec);  // what it points to
      type = fs::is_regular_file(st) ? DT_REG : (fs::is_directory(st) && !link ? DT_DIR : DT_UNKNOWN);
    }
    if (type == DT_REG) files.push_back(child.string());
    else if (type == DT_DIR) add_files(child, files);
  }
  ::closedir(dir);
}

}  // namespace

std::vector<std::string> list_outputs(const fs::path& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  const fs::path absolute = fs::absolute(dir, ec);
  if (ec) return files;
  add_files(absolute, files);
  std::sort(files.begin(), files.end());
  return files;
}

void make_dirs(const fs::path& dir, std::error_code& ec) {
  ec.clear();
  if (::mkdir(dir.c_str(), 0777) == 0) return;
  const int err = errno;
  if (err == ENOENT) {  // a parent is missing
    fs::create_directories(dir, ec);
  } else if (err != EEXIST || !fs::is_directory(dir, ec)) {
    if (!ec) ec = std::error_code(err == EEXIST ? ENOTDIR : err, std::generic_category());
  }
}

namespace {

// Writes all of `data` to `fd`. False on an error, with errno set.
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

int open_for_writing(const fs::path& path, int flags) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0666);
}

}  // namespace

LogFile::LogFile(const fs::path& path) : path_(path) {
  std::error_code ec;
  make_dirs(path.parent_path(), ec);
  fd_.reset(open_for_writing(path, O_APPEND));
  if (fd_.get() < 0) {
    throw Error(errc::internal,
                "cannot open the job log " + path.string() + ": " + (ec ? ec.message() : std::strerror(errno)));
  }
}

void LogFile::write(std::string_view stream, std::string_view line) {
  std::string text = rfc3339_ms(std::chrono::system_clock::now());
  text.reserve(text.size() + stream.size() + line.size() + 3);
  text.append(" ").append(stream).append(" ").append(line).append("\n");
  // One write per line, appended (O_APPEND): `conveyor job logs` (tail)
  // sees a running job's lines whole. A line that cannot be written is
  // dropped, as a full disk would drop it.
  std::lock_guard lock(mutex_);
  write_all(fd_.get(), text);
}

void write_json_file(const fs::path& path, const nlohmann::json& j) {
  const fs::path tmp = path.string() + ".tmp";
  Fd out(open_for_writing(tmp, O_TRUNC));
  if (out.get() < 0 && errno == ENOENT) {  // its folder is made with the log, so seldom
    std::error_code ec;
    make_dirs(path.parent_path(), ec);
    out.reset(open_for_writing(tmp, O_TRUNC));
  }
  if (out.get() < 0 || !write_all(out.get(), j.dump(2) + "\n")) {
    throw Error(errc::internal, "cannot write " + tmp.string() + ": " + std::strerror(errno));
  }
  if (::close(out.release()) != 0)
    throw Error(errc::internal, "cannot write " + tmp.string() + ": " + std::strerror(errno));
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(errc::internal, "cannot rename " + tmp.string() + ": " + ec.message());
}

}  // namespace conveyor::worker
