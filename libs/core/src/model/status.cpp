#include "conveyor/model/status.hpp"

#include <algorithm>
#include <cstddef>

#include "conveyor/error/error.hpp"

// The DESIGN §3 table. Its SQL twin is conveyor.job_status_transition in
// deploy/migrations/20261122000000_initial_schema.up.sql; the integration test
// tests/integration/db/status_machine_test.cpp checks that both agree.
namespace conveyor::model {
namespace {

using S = JobStatus;

constexpr std::size_t index(JobStatus s) noexcept { return static_cast<std::size_t>(s); }

// Each row lists its targets in kAllStatuses order, so allowed_from() can
// return a span into it directly.
constexpr std::array kFromInitialized = {S::configured, S::internal_error, S::external_error, S::canceled};
constexpr std::array kFromConfigured = {S::ready, S::internal_error, S::canceled};
constexpr std::array kFromReady = {S::queued, S::internal_error, S::canceled};
constexpr std::array kFromQueued = {S::ready, S::started, S::internal_error, S::canceled};
constexpr std::array kFromStarted = {S::ready,          S::processed,      S::failed,
                                     S::internal_error, S::external_error, S::canceled};
constexpr std::array kFromProcessed = {S::done, S::internal_error, S::external_error, S::canceled};
constexpr std::array kFromError = {S::error_checked};  // failed, internal_error, external_error
constexpr std::array kFromErrorChecked = {S::initialized, S::configured, S::ready, S::processed, S::canceled};
constexpr std::array kFromCanceled = {S::initialized};

constexpr std::array<std::string_view, 12> kNames = {
    "initialized", "configured", "ready",          "queued",         "started",       "processed",
    "done",        "failed",     "internal_error", "external_error", "error_checked", "canceled",
};

constexpr bool sorted(std::span<const JobStatus> row) {
  for (std::size_t i = 1; i < row.size(); ++i) {
    if (index(row[i - 1]) >= index(row[i])) return false;
  }
  return true;
}
static_assert(sorted(kFromInitialized) && sorted(kFromConfigured) && sorted(kFromReady) && sorted(kFromQueued) &&
              sorted(kFromStarted) && sorted(kFromProcessed) && sorted(kFromErrorChecked));
static_assert(index(JobStatus::canceled) + 1 == kNames.size());

}  // namespace

std::string_view to_string(JobStatus s) noexcept {
  const auto i = index(s);
  return i < kNames.size() ? kNames[i] : std::string_view{"unknown"};
}

std::optional<JobStatus> parse_status(std::string_view name) noexcept {
  for (JobStatus s : kAllStatuses) {
    if (kNames[index(s)] == name) return s;
  }
  return std::nullopt;
}

JobStatus status_named(std::string_view name, const std::string& field) {
  if (const auto s = parse_status(name)) return *s;
  std::string known;
  for (const JobStatus s : kAllStatuses) known += (known.empty() ? "" : ", ") + std::string(to_string(s));
  throw FieldError(field, field + ": unknown status '" + std::string(name.substr(0, 100)) + "' (one of " + known + ")");
}

std::vector<JobStatus> statuses_named(std::string_view list, const std::string& field) {
  std::vector<JobStatus> out;
  while (!list.empty()) {
    const auto comma = list.find(',');
    const std::string_view item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    if (item.empty()) continue;
    const JobStatus s = status_named(item, field);
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  if (out.empty()) throw FieldError(field, field + ": expected one or more statuses, such as failed,internal_error");
  return out;
}

bool is_valid_initial(JobStatus to) noexcept { return to == JobStatus::initialized || to == JobStatus::canceled; }

std::span<const JobStatus> allowed_from(JobStatus from) noexcept {
  switch (from) {
    case S::initialized:
      return kFromInitialized;
    case S::configured:
      return kFromConfigured;
    case S::ready:
      return kFromReady;
    case S::queued:
      return kFromQueued;
    case S::started:
      return kFromStarted;
    case S::processed:
      return kFromProcessed;
    case S::done:
      return {};
    case S::failed:
    case S::internal_error:
    case S::external_error:
      return kFromError;
    case S::error_checked:
      return kFromErrorChecked;
    case S::canceled:
      return kFromCanceled;
  }
  return {};
}

bool is_valid_transition(JobStatus from, JobStatus to) noexcept {
  for (JobStatus s : allowed_from(from)) {
    if (s == to) return true;
  }
  return false;
}

std::optional<JobStatus> passes_through(JobStatus from, JobStatus to) noexcept {
  if (from == S::initialized && to == S::ready) return S::configured;
  if (from == S::started && to == S::done) return S::processed;
  return std::nullopt;
}

// Final = the pipeline will not move the job again by itself: done, canceled
// and the dead letters (failed, internal_error). external_error is retried
// automatically, so it is not final. Matches conveyor.job_status.is_final.
bool is_final(JobStatus s) noexcept {
  return s == S::done || s == S::canceled || s == S::failed || s == S::internal_error;
}

bool is_error(JobStatus s) noexcept { return s == S::failed || s == S::internal_error || s == S::external_error; }

// A commit that notifies wakes every listening backend of the database
// (PostgreSQL 15): the claim's commit, which only starts jobs, wakes none.
bool is_notified(JobStatus s) noexcept { return s != S::started; }

}  // namespace conveyor::model
