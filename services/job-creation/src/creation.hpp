#pragma once
// conveyor-creation: the REST API of DESIGN §6 (jobs, job types, system
// parameters), periodic schedules with catch-up and triggers (scheduler.hpp).
// It only writes rows; the status triggers announce the changes and the
// stage services do the rest.
#include "conveyor/http/server.hpp"
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::creation {

inline constexpr const char* kServiceName = "conveyor-creation";
// NOTIFYed when a done job's triggers become pending (an insert into
// conveyor.trigger_pending, migration 20261223000100_trigger_pending_wakes);
// creation LISTENs on it.
inline constexpr const char* kTriggerPendingChannel = "conveyor_trigger_pending";
// The wake-up reason that channel gives (Context::listen_also).
inline constexpr const char* kTriggerPendingWake = "trigger_pending";

runtime::ServiceSpec service_spec();

// Adds the /v1 routes to `server`; handlers use ctx's pool and parameters.
// ctx must outlive the server. Handlers are thread-safe.
void register_routes(http::Server& server, runtime::Context& ctx);

// runtime::run callbacks: setup registers the routes on ctx.http() and
// listens on kTriggerPendingChannel; loop runs the schedules and triggers
// (scheduler.hpp) every poll interval, at once when triggers become
// pending, until the stop.
void setup(runtime::Context& ctx);
void loop(runtime::Context& ctx);

}  // namespace conveyor::creation
