#include "job_files.hpp"

#include <fmt/format.h>

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
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

LogFile::LogFile(const fs::path& path) : path_(path) {
  std::error_code ec;
  make_dirs(path.parent_path(), ec);
  out_.open(path, std::ios::out | std::ios::app | std::ios::binary);
  if (!out_) {
    throw Error(errc::internal,
                "cannot open the job log " + path.string() + (ec ? ": " + ec.message() : std::string(": open failed")));
  }
}

void LogFile::write(std::string_view stream, std::string_view line) {
  std::lock_guard lock(mutex_);
  out_ << rfc3339_ms(std::chrono::system_clock::now()) << ' ' << stream << ' ' << line << '\n';
  // Flushed per line so `conveyor job logs` (tail) sees a running job's output.
  out_.flush();
}

void write_json_file(const fs::path& path, const nlohmann::json& j) {
  std::error_code ec;
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::out | std::ios::trunc);
    if (!out && !fs::exists(path.parent_path(), ec)) {  // its folder is made with the log, so seldom
      make_dirs(path.parent_path(), ec);
      out.clear();
      out.open(tmp, std::ios::out | std::ios::trunc);
    }
    if (!out) throw Error(errc::internal, "cannot write " + tmp.string());
    out << j.dump(2) << '\n';
    if (!out) throw Error(errc::internal, "cannot write " + tmp.string());
  }
  fs::rename(tmp, path, ec);
  if (ec) throw Error(errc::internal, "cannot rename " + tmp.string() + ": " + ec.message());
}

}  // namespace conveyor::worker
