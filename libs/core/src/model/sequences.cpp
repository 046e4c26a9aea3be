#include "conveyor/model/sequences.hpp"

#include <algorithm>
#include <charconv>
#include <system_error>

namespace conveyor::model {
namespace {

namespace fs = std::filesystem;

// pg_sequences.last_value is NULL for a sequence never used.
constexpr db::Statement kSequenceMarks{
    "model_sequence_marks",
    "SELECT sequencename, last_value FROM pg_sequences "
    "WHERE schemaname = 'conveyor' AND last_value IS NOT NULL ORDER BY sequencename"};

// One statement for every sequence of the schema: the column a sequence feeds
// comes from pg_depend (bigserial 'a', identity 'i'); its max() needs the
// table's name in the query, so it is read through query_to_xml with format's
// %I quoting (names from the catalog, no input). setval only moves forward.
constexpr db::Statement kAdvanceSequences{
    "model_advance_sequences",
    "WITH seq AS ("
    "  SELECT c.oid AS seq_oid, c.relname::text AS name, s.last_value AS restored, "
    "         d.refobjid AS table_oid, a.attname AS column_name "
    "  FROM pg_class c "
    "  JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'conveyor' "
    "  JOIN pg_sequences s ON s.schemaname = n.nspname AND s.sequencename = c.relname "
    "  LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid "
    "       AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
    "  LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "  WHERE c.relkind = 'S'"
    "), target AS ("
    "  SELECT seq.*, greatest("
    "    coalesce(seq.restored, 0),"
    "    coalesce((SELECT max(f.v) FROM unnest($1::text[], $2::bigint[]) AS f(n, v) "
    "              WHERE f.n = seq.name), 0),"
    "    coalesce(CASE WHEN seq.column_name IS NOT NULL THEN (xpath('/row/m/text()', query_to_xml("
    "      format('SELECT max(%I)::bigint AS m FROM %s', seq.column_name, seq.table_oid::regclass),"
    "      false, true, '')))[1]::text::bigint END, 0)) AS value "
    "  FROM seq"
    ") "
    "SELECT name, coalesce(restored, 0), "
    "       CASE WHEN value > coalesce(restored, 0) THEN setval(seq_oid, value, true) "
    "            ELSE value END "
    "FROM target ORDER BY name"};

// "job-42" -> 42; anything else -> 0.
std::int64_t job_id_of(const std::string& folder) {
  constexpr std::string_view kPrefix = "job-";
  if (folder.size() <= kPrefix.size() || folder.compare(0, kPrefix.size(), kPrefix) != 0) return 0;
  std::int64_t id = 0;
  const char* first = folder.data() + kPrefix.size();
  const char* last = folder.data() + folder.size();
  const auto [end, ec] = std::from_chars(first, last, id);
  return ec == std::errc{} && end == last && id > 0 ? id : 0;
}

// The highest job-N among the entries of `dir`; a missing or unreadable
// folder counts as none (a fresh host has no data dir yet).
std::int64_t highest_in(const fs::path& dir) {
  std::int64_t highest = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    highest = std::max(highest, job_id_of(it->path().filename().string()));
  }
  return highest;
}

}  // namespace

SequenceMarks sequence_marks(db::Tx& tx) {
  SequenceMarks marks;
  for (const db::Row r : tx.exec(kSequenceMarks)) marks[r[0].as_string()] = r[1].as_int();
  return marks;
}

std::int64_t highest_job_id_on_disk(const fs::path& data_dir) {
  std::int64_t highest = highest_in(data_dir / "outputs");
  std::error_code ec;
  for (fs::directory_iterator month(data_dir / "logs", ec), end; !ec && month != end; month.increment(ec)) {
    highest = std::max(highest, highest_in(month->path()));
  }
  return highest;
}

std::vector<SequenceAdvance> advance_sequences(db::Tx& tx, const SequenceMarks& floors) {
  std::vector<std::string> names;
  std::vector<std::int64_t> values;
  for (const auto& [name, value] : floors) {
    names.push_back(name);
    values.push_back(value);
  }
  std::vector<SequenceAdvance> out;
  for (const db::Row r : tx.exec(kAdvanceSequences, {names, values})) {
    out.push_back({.sequence = r[0].as_string(), .restored = r[1].as_int(), .last_value = r[2].as_int()});
  }
  return out;
}

}  // namespace conveyor::model
