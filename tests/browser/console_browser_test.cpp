// The console in headless Chromium (issue 15): a real stack (the job path,
// the monitor, one worker) with jobs submitted through the REST API, then
// tests/browser/console_test.js (puppeteer-core over the DevTools protocol)
// logs in with an operator token, finds the running job by filter, opens its
// page, sees its history and live log, cancels it from the page and sees the
// status change. Screenshots of the overview and the job page are kept in
// <build>/tests/browser/artifacts/ (BROWSER_ARTIFACTS_DIR).
#include <gtest/gtest.h>

#include <filesystem>

#include "../e2e/e2e.hpp"

namespace {

namespace ct = conveyor::testing;
namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

TEST(ConsoleBrowser, AnOperatorFindsARunningJobWatchesItsLogAndCancelsIt) {
  const fs::path work = BROWSER_WORK_DIR;
  const auto setup = ct::run({"bash", std::string(BROWSER_SOURCE_DIR) + "/setup.sh", work.string()}, {}, 600s);
  ASSERT_EQ(setup.status, 0) << "tests/browser/setup.sh (chromium, npm ci):\n" << setup.output;

  // One type, sleep, with a file sink (the example types' webhook sink has
  // no receiver here).
  const conveyor::e2e::SleepTypeFile types(600, 1, json::array({conveyor::e2e::file_sink()}));
  ct::Stack::Options o;
  o.workers = 1;
  o.services = {"creation", "configuration", "execution", "publication", "monitor"};
  o.job_types_file = types.path();
  ct::Stack stack(o);
  // Some history for the graphs (quick jobs done), then the long one the
  // browser cancels.
  for (int i = 0; i < 4; ++i) conveyor::e2e::submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 0}}}});
  const json long_job = conveyor::e2e::submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 120}}}});
  const std::string id = std::to_string(long_job.at("id").get<std::int64_t>());
  ASSERT_TRUE(ct::wait_until([&] { return conveyor::e2e::status_of(stack, id) == "started"; }, 60s))
      << "job " << id << " is " << conveyor::e2e::status_of(stack, id) << "\n"
      << stack.logs_tail();

  const fs::path shots = BROWSER_ARTIFACTS_DIR;
  fs::create_directories(shots);
  const auto browser = ct::run({"node", std::string(BROWSER_SOURCE_DIR) + "/console_test.js"},
                               {{"NODE_PATH", (work / "npm" / "node_modules").string()},
                                {"CONSOLE_URL", "http://127.0.0.1:" + std::to_string(stack.port("monitor"))},
                                {"TOKEN", stack.api_token()},
                                {"JOB_ID", id},
                                {"SHOTS_DIR", shots.string()}},
                               180s);
  EXPECT_EQ(browser.status, 0) << browser.output << "\n" << stack.logs_tail();

  // What the browser saw is what the database holds.
  EXPECT_EQ(conveyor::e2e::status_of(stack, id), "canceled");
  EXPECT_NE(stack.db().query_value("SELECT canceled_at FROM conveyor.job WHERE id = " + id), "")
      << "the cancel was asked (canceled_at), and the worker stopped the job";
  for (const char* shot : {"console-overview.png", "console-job.png"}) {
    EXPECT_GT(fs::exists(shots / shot) ? fs::file_size(shots / shot) : 0u, 10'000u) << shot;
  }
}

}  // namespace
