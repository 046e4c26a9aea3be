#pragma once
// The job status machine of DESIGN §3. This table exists once in C++ (here)
// and once in SQL (conveyor.job_status_transition, used by the trigger
// conveyor.check_status_change()); tests/integration/db/status_machine_test.cpp
// proves they agree. Thread-safe: constant data.
#include <array>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace conveyor::model {

enum class JobStatus {
  initialized,
  configured,
  ready,
  queued,
  started,
  processed,
  done,
  failed,
  internal_error,
  external_error,
  error_checked,
  canceled,
};

inline constexpr std::array<JobStatus, 12> kAllStatuses = {
    JobStatus::initialized,    JobStatus::configured,     JobStatus::ready,         JobStatus::queued,
    JobStatus::started,        JobStatus::processed,      JobStatus::done,          JobStatus::failed,
    JobStatus::internal_error, JobStatus::external_error, JobStatus::error_checked, JobStatus::canceled,
};

std::string_view to_string(JobStatus s) noexcept;
// Parses a status name; nullopt for an unknown name.
std::optional<JobStatus> parse_status(std::string_view name) noexcept;

// parse_status for input: throws FieldError(field) naming the unknown name
// and every known one.
JobStatus status_named(std::string_view name, const std::string& field);
// A comma-separated list of status names ("failed,internal_error"), each
// once, in the order given; empty items are skipped, and a list of none is
// refused. Throws as status_named.
std::vector<JobStatus> statuses_named(std::string_view list, const std::string& field);

// Statuses a job may be inserted with.
bool is_valid_initial(JobStatus to) noexcept;
// Whether `from -> to` is in the table.
bool is_valid_transition(JobStatus from, JobStatus to) noexcept;
// The passage `from -> to`, if it is one: the status it goes through, both
// legs transitions. An UPDATE may make it at once, and the status trigger
// records it as its two changes (history rows, events). initialized ->
// configured -> ready: configuration's move of a job with nothing to wait
// for; started -> processed -> done: the worker's finish of a run that
// succeeded when the job delivers nothing (conveyor.status_after_success).
// Matches conveyor.job_status_passage (migrations 20261230000000,
// 20270104000000).
std::optional<JobStatus> passes_through(JobStatus from, JobStatus to) noexcept;
// The statuses reachable from `from` in one step, in kAllStatuses order.
std::span<const JobStatus> allowed_from(JobStatus from) noexcept;
// No transition leaves a terminal status except through error_checked/restart;
// `done` is the only status with no way out at all.
bool is_final(JobStatus s) noexcept;
// failed, internal_error, external_error.
bool is_error(JobStatus s) noexcept;
// Whether the status trigger notifies a change to `s` (its channel, and
// conveyor_outbox): every status but started, which no service waits on.
// Done only while a configured job depends on the job (20261228000100): a
// dependent committed at the same moment as its upstream's done may be
// seen by neither, and configuration readies it at its own configured
// NOTIFY or its poll. Matches conveyor.job_status.notified (migration
// 20261228000000).
bool is_notified(JobStatus s) noexcept;

}  // namespace conveyor::model
