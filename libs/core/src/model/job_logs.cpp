#include "conveyor/model/job_logs.hpp"

#include <fstream>

namespace conveyor::model {

std::filesystem::path job_log_file(const std::filesystem::path& data_dir, const Job& job) {
  return job_log_dir(data_dir, job_log_month(job), job.id.value()) / "logs.txt";
}

LogTail read_log_tail(const std::filesystem::path& file, std::uint64_t offset, std::uint64_t max_bytes) {
  LogTail tail;
  std::ifstream in(file, std::ios::binary);
  if (!in) return tail;
  tail.exists = true;
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  if (end < 0) return tail;
  tail.size = static_cast<std::uint64_t>(end);
  if (offset > tail.size) offset = 0;
  std::uint64_t from = offset;
  const bool cut = tail.size - from > max_bytes;
  if (cut) from = tail.size - max_bytes;
  tail.from = from;
  tail.text.resize(tail.size - from);
  in.seekg(static_cast<std::streamoff>(from));
  in.read(tail.text.data(), static_cast<std::streamsize>(tail.text.size()));
  tail.text.resize(static_cast<std::size_t>(in.gcount()));
  tail.size = from + tail.text.size();
  if (cut) {
    const auto nl = tail.text.find('\n');
    if (nl != std::string::npos) {
      tail.text.erase(0, nl + 1);
      tail.from += nl + 1;
    }
  }
  return tail;
}

}  // namespace conveyor::model
