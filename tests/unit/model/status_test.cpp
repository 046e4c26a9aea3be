#include "conveyor/model/status.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace conveyor::model {
namespace {

using S = JobStatus;

// DESIGN §3, written out again independently of status.cpp.
const std::map<S, std::set<S>>& design_table() {
  static const std::map<S, std::set<S>> table = {
      {S::initialized, {S::configured, S::internal_error, S::external_error, S::canceled}},
      {S::configured, {S::ready, S::internal_error, S::canceled}},
      {S::ready, {S::queued, S::internal_error, S::canceled}},
      {S::queued, {S::started, S::ready, S::internal_error, S::canceled}},
      {S::started, {S::processed, S::ready, S::failed, S::internal_error, S::external_error, S::canceled}},
      {S::processed, {S::done, S::external_error, S::internal_error, S::canceled}},
      {S::failed, {S::error_checked}},
      {S::internal_error, {S::error_checked}},
      {S::external_error, {S::error_checked}},
      {S::error_checked, {S::initialized, S::configured, S::ready, S::processed, S::canceled}},
      {S::canceled, {S::initialized}},
      {S::done, {}},
  };
  return table;
}

TEST(JobStatus, EveryPairMatchesTheDesignTable) {
  ASSERT_EQ(design_table().size(), kAllStatuses.size());
  for (S from : kAllStatuses) {
    const auto& allowed = design_table().at(from);
    for (S to : kAllStatuses) {
      EXPECT_EQ(is_valid_transition(from, to), allowed.count(to) == 1) << to_string(from) << " -> " << to_string(to);
    }
  }
}

TEST(JobStatus, AllowedFromListsTheRowInOrder) {
  for (S from : kAllStatuses) {
    const auto span = allowed_from(from);
    std::vector<S> got(span.begin(), span.end());
    std::vector<S> want;
    for (S to : kAllStatuses) {
      if (design_table().at(from).count(to) == 1) want.push_back(to);
    }
    EXPECT_EQ(got, want) << to_string(from);
  }
}

TEST(JobStatus, HotPathIsAllowed) {
  const std::vector<S> path = {S::initialized, S::configured, S::ready, S::queued, S::started, S::processed, S::done};
  for (std::size_t i = 1; i < path.size(); ++i) {
    EXPECT_TRUE(is_valid_transition(path[i - 1], path[i])) << to_string(path[i - 1]) << " -> " << to_string(path[i]);
  }
}

TEST(JobStatus, SomeTransitionsAreRefused) {
  EXPECT_FALSE(is_valid_transition(S::initialized, S::done));
  EXPECT_FALSE(is_valid_transition(S::initialized, S::ready));
  EXPECT_FALSE(is_valid_transition(S::ready, S::started));
  EXPECT_FALSE(is_valid_transition(S::failed, S::ready));
  EXPECT_FALSE(is_valid_transition(S::canceled, S::ready));
  EXPECT_FALSE(is_valid_transition(S::error_checked, S::done));
  EXPECT_FALSE(is_valid_transition(S::error_checked, S::queued));
  // A same-status "change" is not a transition (the trigger treats it as a no-op).
  for (S s : kAllStatuses) EXPECT_FALSE(is_valid_transition(s, s)) << to_string(s);
}

TEST(JobStatus, DoneHasNoWayOut) {
  EXPECT_TRUE(allowed_from(S::done).empty());
  for (S to : kAllStatuses) EXPECT_FALSE(is_valid_transition(S::done, to)) << to_string(to);
}

TEST(JobStatus, InitialStatuses) {
  for (S s : kAllStatuses) {
    EXPECT_EQ(is_valid_initial(s), s == S::initialized || s == S::canceled) << to_string(s);
  }
}

TEST(JobStatus, NamesRoundTrip) {
  std::set<std::string> names;
  for (S s : kAllStatuses) {
    const auto name = to_string(s);
    names.emplace(name);
    const auto back = parse_status(name);
    ASSERT_TRUE(back.has_value()) << name;
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(names.size(), kAllStatuses.size());
  EXPECT_EQ(to_string(S::internal_error), "internal_error");
  EXPECT_EQ(to_string(S::error_checked), "error_checked");
}

TEST(JobStatus, UnknownNameIsNullopt) {
  EXPECT_FALSE(parse_status("").has_value());
  EXPECT_FALSE(parse_status("Done").has_value());
  EXPECT_FALSE(parse_status("pending").has_value());
  EXPECT_FALSE(parse_status("done ").has_value());
}

TEST(JobStatus, ErrorAndFinalClassification) {
  const std::set<S> errors = {S::failed, S::internal_error, S::external_error};
  const std::set<S> finals = {S::done, S::canceled, S::failed, S::internal_error};
  for (S s : kAllStatuses) {
    EXPECT_EQ(is_error(s), errors.count(s) == 1) << to_string(s);
    EXPECT_EQ(is_final(s), finals.count(s) == 1) << to_string(s);
  }
  // Every error leads to error_checked and only there.
  for (S s : errors) {
    ASSERT_EQ(allowed_from(s).size(), 1u);
    EXPECT_EQ(allowed_from(s)[0], S::error_checked);
  }
}

}  // namespace
}  // namespace conveyor::model
