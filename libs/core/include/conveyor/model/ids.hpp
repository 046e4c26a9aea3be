#pragma once
// Strong id types: a worker id cannot be passed where a job id is wanted.
#include <compare>
#include <cstdint>
#include <functional>
#include <string>

namespace conveyor::model {

template <typename T, typename Tag>
class NamedType {
 public:
  using value_type = T;
  constexpr NamedType() = default;
  constexpr explicit NamedType(T v) : value_(v) {}
  constexpr const T& value() const noexcept { return value_; }
  friend constexpr auto operator<=>(const NamedType&, const NamedType&) = default;

 private:
  T value_{};
};

using JobId = NamedType<std::int64_t, struct job_id_tag>;
using WorkerId = NamedType<std::int64_t, struct worker_id_tag>;
using OutboxId = NamedType<std::int64_t, struct outbox_id_tag>;

}  // namespace conveyor::model

template <typename T, typename Tag>
struct std::hash<conveyor::model::NamedType<T, Tag>> {
  std::size_t operator()(const conveyor::model::NamedType<T, Tag>& v) const noexcept {
    return std::hash<T>{}(v.value());
  }
};
