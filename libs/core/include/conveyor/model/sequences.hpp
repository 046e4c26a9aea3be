#pragma once
// The id sequences of the conveyor schema across a restore (issue 13, item 5).
// pg_restore puts each sequence back where the backup left it, so without this
// a new job would get the id of a job removed by the restore, and its log and
// output folders (named job-<id>) would mix with that job's. Change ids
// (job_status_change, outbox) are the event dedupe key, so they must not come
// back either. Thread-safe: the functions use the caller's transaction.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"

namespace conveyor::model {

// The sequence conveyor.job ids come from.
inline constexpr const char* kJobIdSequence = "job_id_seq";

// Sequence name (in schema conveyor) -> the highest value it stands for.
using SequenceMarks = std::map<std::string, std::int64_t>;

// The last value each conveyor sequence handed out; sequences never used (and
// a database without the schema) are absent.
SequenceMarks sequence_marks(db::Tx& tx);

// The highest N of <data_dir>/logs/<YYYY-MM>/job-N and <data_dir>/outputs/job-N,
// 0 when there are none (or the folders cannot be read).
std::int64_t highest_job_id_on_disk(const std::filesystem::path& data_dir);

struct SequenceAdvance {
  std::string sequence;
  std::int64_t restored = 0;    // where the restore left it (0: never used)
  std::int64_t last_value = 0;  // where it is now; the next id is last_value + 1
};

// Moves every conveyor sequence to the greatest of: its own value, `floors`
// (e.g. the marks taken before the restore, the ids on disk), and the largest
// id in the column it feeds. Never moves one back. Returns every sequence.
std::vector<SequenceAdvance> advance_sequences(db::Tx& tx, const SequenceMarks& floors);

}  // namespace conveyor::model
