// FAKE Kubernetes and Nomad API servers (see fake_cluster.hpp): only what the
// worker pool's backends call, in the published JSON shapes.
#include "conveyor/testing/fake_cluster.hpp"

#include <signal.h>

#include <ctime>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <httplib.h>

namespace conveyor::testing {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string now_rfc3339() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string random_hex(int n) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::string out;
  for (int i = 0; i < n; ++i) out += "0123456789abcdef"[rng() % 16];
  return out;
}

// A random id in the shape of a UUID: 8-4-4-4-12 hex digits.
std::string random_uuid() {
  return random_hex(8) + "-" + random_hex(4) + "-" + random_hex(4) + "-" + random_hex(4) + "-" + random_hex(12);
}

// The repository of an image reference: "localhost/conveyor-worker:1a2b" -> "conveyor-worker".
std::string repository(std::string image) {
  if (const auto at = image.find('@'); at != std::string::npos) image.resize(at);
  const auto slash = image.rfind('/');
  if (const auto colon = image.rfind(':');
      colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    image.resize(colon);
  }
  return slash == std::string::npos ? image : image.substr(image.rfind('/') + 1);
}

bool dns_subdomain(const std::string& s) {
  static const std::regex re("[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*");
  return !s.empty() && s.size() <= 253 && std::regex_match(s, re);
}

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

// Starts `exe` with `env` (over the test's environment), output to `log`.
std::unique_ptr<ChildProcess> launch(const std::filesystem::path& exe, const std::map<std::string, std::string>& env,
                                     const std::filesystem::path& log) {
  return std::make_unique<ChildProcess>(ChildProcess::Options{
      .argv = {exe.string()}, .env = env, .stdout_file = log, .stderr_file = {}, .detach = false});
}

// Polls a process: its exit status once it has ended; escalates a stop.
void supervise(FakeProcess& p) {
  if (!p.process || p.exit_status) return;
  if (!p.process->running()) {
    p.exit_status = p.process->wait(std::chrono::milliseconds(0)).value_or(-1);
    return;
  }
  if (p.kill_at && Clock::now() >= *p.kill_at) {
    p.process->signal(SIGKILL);
    p.kill_at.reset();
  }
}

void stop_process(FakeProcess& p, std::chrono::milliseconds grace) {
  if (!p.process || p.exit_status || p.kill_at) return;
  p.process->signal(SIGTERM);
  p.kill_at = Clock::now() + grace;
}

void kill_all(FakeProcess& p) {
  if (p.process && !p.exit_status) p.process->signal(SIGKILL);
}

}  // namespace

// ---------------------------------------------------------------- FakeApiServer

FakeApiServer::FakeApiServer(Options options) : options_(std::move(options)) {
  if (!options_.cert_file.empty()) {
    server_ = std::make_unique<httplib::SSLServer>(options_.cert_file.c_str(), options_.key_file.c_str());
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  server_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    std::optional<Fault> hit;
    {
      std::lock_guard lock(mu_);
      for (auto it = faults_.begin(); it != faults_.end(); ++it) {
        if ((!it->method.empty() && it->method != req.method) || !req.path.starts_with(it->path_prefix)) continue;
        hit = *it;
        if (--it->count <= 0) faults_.erase(it);
        break;
      }
    }
    if (hit && hit->delay.count() > 0) std::this_thread::sleep_for(hit->delay);  // the fault: a slow API
    std::lock_guard lock(mu_);
    if (hit && hit->status > 0) {
      res.status = hit->status;
      res.set_content(error_body(hit->status, "injected fault"), "application/json");
      requests_.push_back({req.method, req.path, hit->status, "injected fault"});
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!authorized(req.get_header_value("Authorization"), req.get_header_value("X-Nomad-Token"))) {
      const int status = error_body(401, "").find("\"kind\"") != std::string::npos ? 401 : 403;
      res.status = status;
      res.set_content(error_body(status, status == 401 ? "Unauthorized" : "Permission denied"), "application/json");
      requests_.push_back({req.method, req.path, status, "no or wrong token"});
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
}

FakeApiServer::~FakeApiServer() { shut(); }

void FakeApiServer::start() {
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("fake API server: cannot bind 127.0.0.1");
  listener_ = std::thread([this] { server_->listen_after_bind(); });
  supervisor_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      tick();
      cv_.wait_for(lock, std::chrono::milliseconds(50));  // polling the processes
    }
  });
}

void FakeApiServer::shut() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  server_->stop();
  if (listener_.joinable()) listener_.join();
}

std::string FakeApiServer::url() const {
  return fmt::format("{}://127.0.0.1:{}", options_.cert_file.empty() ? "http" : "https", port_);
}

void FakeApiServer::inject(Fault fault) {
  std::lock_guard lock(mu_);
  faults_.push_back(std::move(fault));
}

void FakeApiServer::clear_faults() {
  std::lock_guard lock(mu_);
  faults_.clear();
}

std::vector<FakeApiServer::Request> FakeApiServer::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

void FakeApiServer::record(const std::string& method, const std::string& path, int status, const std::string& note) {
  requests_.push_back({method, path, status, note});
}

// ---------------------------------------------------------------- Kubernetes

FakeKubernetes::FakeKubernetes(Options options)
    : FakeApiServer(FakeApiServer::Options{options.cert_file, options.key_file}), o_(std::move(options)) {
  const std::string ns = "/api/v1/namespaces/([^/]+)";
  auto& s = server();
  s.Get(ns + "/podtemplates/([^/]+)",
        [this](const httplib::Request& req, httplib::Response& res) { read_pod_template(req, res); });
  s.Post(ns + "/pods", [this](const httplib::Request& req, httplib::Response& res) { create_pod(req, res); });
  s.Get(ns + "/pods", [this](const httplib::Request& req, httplib::Response& res) { list_pods(req, res); });
  s.Delete(ns + "/pods/([^/]+)", [this](const httplib::Request& req, httplib::Response& res) { delete_pod(req, res); });
  start();
}

void FakeKubernetes::read_pod_template(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  const std::string name = req.matches[2];
  const auto it = templates_.find(name);
  if (req.matches[1] != o_.namespace_name || it == templates_.end()) {
    reply(res, 404, json::parse(error_body(404, "podtemplates \"" + name + "\" not found")));
  } else {
    reply(res, 200, it->second);
  }
  record(req.method, req.path, res.status, "");
}

// Why the API server would refuse to create `pod` in namespace `ns` ("": it would not).
std::string FakeKubernetes::invalid_pod(const json& pod, const std::string& ns) const {
  const std::string name = pod.value("metadata", json::object()).value("name", "");
  const json spec = pod.value("spec", json::object());
  std::string invalid;
  if (pod.value("kind", "") != "Pod" || pod.value("apiVersion", "") != "v1") invalid = "kind/apiVersion must be Pod/v1";
  else if (!dns_subdomain(name))
    invalid = "metadata.name: Invalid value: \"" + name + "\": a lowercase RFC 1123 subdomain";
  else if (ns != o_.namespace_name) invalid = "namespace " + ns + " is not served";
  else if (!spec.contains("containers") || !spec["containers"].is_array() || spec["containers"].empty()) {
    invalid = "spec.containers: Required value";
  } else if (spec.value("restartPolicy", "Always") != "Never") {
    invalid = "this fake only runs restartPolicy Never pods";
  }
  for (const json& c : spec.value("containers", json::array())) {
    if (!c.contains("image") || !c["image"].is_string()) invalid = "spec.containers[].image: Required value";
  }
  return invalid;
}

void FakeKubernetes::create_pod(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  json pod;
  try {
    pod = json::parse(req.body);
  } catch (const json::exception& e) {
    reply(res, 400, json::parse(error_body(400, std::string("invalid JSON: ") + e.what())));
    record(req.method, req.path, 400, "bad json");
    return;
  }
  const std::string name = pod.value("metadata", json::object()).value("name", "");
  if (const std::string invalid = invalid_pod(pod, req.matches[1]); !invalid.empty()) {
    reply(res, 422, json::parse(error_body(422, "Pod \"" + name + "\" is invalid: " + invalid)));
    record(req.method, req.path, 422, invalid);
    return;
  }
  if (pods_.contains(name)) {
    reply(res, 409, json::parse(error_body(409, "pods \"" + name + "\" already exists")));
    record(req.method, req.path, 409, "exists");
    return;
  }
  Entry& e = pods_[name];
  e.manifest = pod;
  e.created = now_rfc3339();
  e.uid = random_uuid();
  ++resource_version_;
  start_pod(name);
  reply(res, 201, pod_json(name));
  record(req.method, req.path, 201, "created " + name);
}

void FakeKubernetes::list_pods(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  // Equality-based selectors only: a=b,c==d.
  std::map<std::string, std::string> want;
  std::stringstream sel(req.get_param_value("labelSelector"));
  for (std::string term; std::getline(sel, term, ',');) {
    const auto eq = term.find('=');
    if (eq == std::string::npos || term.find("!=") != std::string::npos) {
      reply(res, 400, json::parse(error_body(400, "unable to parse requirement: " + term)));
      record(req.method, req.path, 400, "selector");
      return;
    }
    std::string value = term.substr(eq + 1);
    if (!value.empty() && value.front() == '=') value.erase(0, 1);
    want[term.substr(0, eq)] = value;
  }
  json items = json::array();
  for (const auto& [name, e] : pods_) {
    const json labels = e.manifest["metadata"].value("labels", json::object());
    bool match = req.matches[1] == o_.namespace_name;
    for (const auto& [k, v] : want) match = match && labels.contains(k) && labels[k] == v;
    if (match) items.push_back(pod_json(name));
  }
  reply(res, 200,
        json{{"kind", "PodList"},
             {"apiVersion", "v1"},
             {"metadata", {{"resourceVersion", std::to_string(resource_version_)}}},
             {"items", items}});
  record(req.method, req.path, 200, "");
}

void FakeKubernetes::delete_pod(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  const std::string name = req.matches[2];
  auto it = pods_.find(name);
  if (req.matches[1] != o_.namespace_name || it == pods_.end()) {
    reply(res, 404, json::parse(error_body(404, "pods \"" + name + "\" not found")));
    record(req.method, req.path, 404, "");
    return;
  }
  long grace = 30;
  if (!req.body.empty()) {
    try {
      grace = json::parse(req.body).value("gracePeriodSeconds", 30L);
    } catch (const json::exception&) {
      reply(res, 400, json::parse(error_body(400, "invalid DeleteOptions")));
      return;
    }
  }
  const json before = pod_json(name);
  const std::string phase = it->second.phase;
  Entry& e = it->second;
  if (!e.proc.process || e.proc.exit_status) {
    pods_.erase(it);  // nothing runs: gone at once
  } else {
    if (!e.deletion_timestamp) e.deletion_timestamp = now_rfc3339();
    stop_process(e.proc, std::chrono::seconds(grace));
  }
  ++resource_version_;
  reply(res, 200, before);
  record(req.method, req.path, 200, "deleted " + phase + " pod " + name);
}

FakeKubernetes::~FakeKubernetes() {
  shut();
  for (auto& [name, e] : pods_) kill_all(e.proc);
}

void FakeKubernetes::start_pod(const std::string& name) {
  Entry& e = pods_[name];
  const json spec = e.manifest["spec"];
  json container = spec["containers"][0];
  const auto exe = o_.images.find(repository(container.value("image", "")));
  if (exe == o_.images.end()) {
    e.waiting_reason = "ErrImagePull";  // stays Pending, as a real kubelet would
    return;
  }
  std::map<std::string, std::string> env;
  for (const json& from : container.value("envFrom", json::array())) {
    const bool cm = from.contains("configMapRef");
    const json ref = cm ? from["configMapRef"] : from.value("secretRef", json::object());
    const auto& store = cm ? o_.config_maps : o_.secrets;
    const auto src = store.find(ref.value("name", ""));
    if (src == store.end()) {
      if (ref.value("optional", false)) continue;
      e.waiting_reason = "CreateContainerConfigError";
      return;
    }
    for (const auto& [k, v] : src->second) env[k] = v;
  }
  for (const json& var : container.value("env", json::array())) {
    if (var.contains("value")) env[var.value("name", "")] = var["value"].get<std::string>();
  }
  e.proc.process =
      launch(exe->second, env, o_.log_dir.empty() ? std::filesystem::path() : o_.log_dir / (name + ".log"));
  e.phase = "Running";
}

nlohmann::json FakeKubernetes::pod_json(const std::string& name) const {
  const Entry& e = pods_.at(name);
  json pod = e.manifest;
  pod["metadata"]["uid"] = e.uid;
  pod["metadata"]["creationTimestamp"] = e.created;
  pod["metadata"]["resourceVersion"] = std::to_string(resource_version_);
  if (e.deletion_timestamp) pod["metadata"]["deletionTimestamp"] = *e.deletion_timestamp;
  json state;
  if (e.proc.exit_status) {
    state = {{"terminated",
              {{"exitCode", *e.proc.exit_status}, {"reason", *e.proc.exit_status == 0 ? "Completed" : "Error"}}}};
  } else if (e.proc.process) {
    state = {{"running", {{"startedAt", e.created}}}};
  } else {
    state = {{"waiting", {{"reason", e.waiting_reason.empty() ? "ContainerCreating" : e.waiting_reason}}}};
  }
  const std::string cname = pod["spec"]["containers"][0].value("name", "worker");
  pod["status"] = {{"phase", e.phase}, {"containerStatuses", json::array({{{"name", cname}, {"state", state}}})}};
  return pod;
}

void FakeKubernetes::tick() {
  for (auto it = pods_.begin(); it != pods_.end();) {
    Entry& e = it->second;
    supervise(e.proc);
    if (e.proc.exit_status && (e.phase == "Running" || e.phase == "Pending")) {
      e.phase = *e.proc.exit_status == 0 ? "Succeeded" : "Failed";
      ++resource_version_;
    }
    if (e.deletion_timestamp && e.proc.exit_status) {
      it = pods_.erase(it);  // graceful deletion done
      ++resource_version_;
      continue;
    }
    ++it;
  }
}

std::string FakeKubernetes::error_body(int status, const std::string& message) const {
  static const std::map<int, std::string> reasons = {
      {400, "BadRequest"},    {401, "Unauthorized"}, {403, "Forbidden"},     {404, "NotFound"},
      {409, "AlreadyExists"}, {422, "Invalid"},      {500, "InternalError"}, {503, "ServiceUnavailable"}};
  const auto r = reasons.find(status);
  return json{{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", json::object()},
              {"status", "Failure"}, {"message", message}, {"reason", r == reasons.end() ? "Unknown" : r->second},
              {"code", status}}
      .dump();
}

bool FakeKubernetes::authorized(const std::string& authorization, const std::string&) const {
  return authorization == "Bearer " + o_.token;
}

void FakeKubernetes::put_pod_template(const nlohmann::json& pod_template) {
  std::lock_guard lock(mu_);
  templates_[pod_template.at("metadata").at("name").get<std::string>()] = pod_template;
}

void FakeKubernetes::put_config_map(const std::string& name, std::map<std::string, std::string> data) {
  std::lock_guard lock(mu_);
  o_.config_maps[name] = std::move(data);
}

std::vector<FakeKubernetes::Pod> FakeKubernetes::pods() const {
  std::lock_guard lock(mu_);
  std::vector<Pod> out;
  for (const auto& [name, e] : pods_) {
    out.push_back(Pod{name, e.phase, e.manifest["spec"]["containers"][0].value("image", ""),
                      e.proc.process ? e.proc.process->pid() : 0, e.deletion_timestamp.has_value(), e.manifest});
  }
  return out;
}

std::filesystem::path FakeKubernetes::write_kubeconfig(const std::filesystem::path& file,
                                                       const std::string& ca_file) const {
  json cluster = {{"server", url()}};
  if (!ca_file.empty()) cluster["certificate-authority"] = ca_file;
  const json config = {
      {"apiVersion", "v1"},
      {"kind", "Config"},
      {"current-context", "fake"},
      {"clusters", {{{"name", "fake"}, {"cluster", cluster}}}},
      {"users", {{{"name", "pool"}, {"user", {{"token", o_.token}}}}}},
      {"contexts",
       {{{"name", "fake"}, {"context", {{"cluster", "fake"}, {"user", "pool"}, {"namespace", o_.namespace_name}}}}}},
  };
  std::ofstream(file) << config.dump(2);
  return file;
}

// ---------------------------------------------------------------- Nomad

FakeNomad::FakeNomad(Options options)
    : FakeApiServer(FakeApiServer::Options{options.cert_file, options.key_file}), o_(std::move(options)) {
  auto& s = server();
  s.Post("/v1/job/(.+)/dispatch",
         [this](const httplib::Request& req, httplib::Response& res) { dispatch_job(req, res); });
  s.Get("/v1/jobs", [this](const httplib::Request& req, httplib::Response& res) { list_jobs(req, res); });
  s.Get("/v1/job/(.+)", [this](const httplib::Request& req, httplib::Response& res) { read_job(req, res); });
  s.Delete("/v1/job/(.+)", [this](const httplib::Request& req, httplib::Response& res) { stop_job(req, res); });
  start();
}

// Nomad answers an unknown job with 404 and plain text.
void FakeNomad::job_not_found(const httplib::Request& req, httplib::Response& res) {
  res.status = 404;
  res.set_content("job not found", "text/plain");
  record(req.method, req.path, 404, "");
}

void FakeNomad::dispatch_job(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  const std::string job_id = req.matches[1];
  const std::string ns = req.has_param("namespace") ? req.get_param_value("namespace") : "default";
  const auto job = jobs_.find(job_id);
  if (job == jobs_.end() || job->second.namespace_name != ns) return job_not_found(req, res);
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::exception&) {
    res.status = 400;
    res.set_content("failed to decode request body", "text/plain");
    record(req.method, req.path, 400, "");
    return;
  }
  std::map<std::string, std::string> meta;
  const json given = body.value("Meta", json::object());
  for (const auto& [k, v] : given.items()) {
    if (v.is_string()) meta[k] = v.get<std::string>();
  }
  std::string missing;
  for (const std::string& key : job->second.meta_required) {
    if (!meta.contains(key)) missing += (missing.empty() ? "" : ", ") + key;
  }
  if (!missing.empty()) {
    res.status = 400;
    res.set_content("Dispatch did not provide required meta keys: [" + missing + "]", "text/plain");
    record(req.method, req.path, 400, "meta");
    return;
  }
  const std::string id = fmt::format("{}/dispatch-{}-{}", job_id, std::time(nullptr), random_hex(8));
  Entry& e = dispatched_[id];
  e.parent = job_id;
  e.namespace_name = ns;
  e.meta = meta;
  e.index = ++index_;
  start_dispatched(id, job->second);
  reply(res, 200,
        json{{"Index", e.index},
             {"JobCreateIndex", e.index},
             {"EvalCreateIndex", e.index},
             {"EvalID", random_uuid()},
             {"DispatchedJobID", id}});
  record(req.method, req.path, 200, "dispatched " + id);
}

// Runs the task of dispatched job `id`: `job`'s executable, with its env's
// ${NOMAD_META_<key>} replaced by the dispatch's meta.
void FakeNomad::start_dispatched(const std::string& id, const ParameterizedJob& job) {
  Entry& e = dispatched_[id];
  std::map<std::string, std::string> env;
  for (auto [k, v] : job.env) {
    for (const auto& [mk, mv] : e.meta) {
      const std::string var = "${NOMAD_META_" + mk + "}";
      for (auto pos = v.find(var); pos != std::string::npos; pos = v.find(var, pos + mv.size()))
        v.replace(pos, var.size(), mv);
    }
    env[k] = v;
  }
  std::string log_name = id;
  for (char& c : log_name) c = c == '/' ? '_' : c;
  e.proc.process =
      launch(job.executable, env, o_.log_dir.empty() ? std::filesystem::path() : o_.log_dir / (log_name + ".log"));
}

void FakeNomad::list_jobs(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  const std::string prefix = req.get_param_value("prefix");
  const std::string ns = req.has_param("namespace") ? req.get_param_value("namespace") : "default";
  json out = json::array();
  for (const auto& [id, e] : dispatched_) {
    if (id.starts_with(prefix) && e.namespace_name == ns) out.push_back(stub(id));
  }
  reply(res, 200, out);
  record(req.method, req.path, 200, "");
}

void FakeNomad::read_job(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  const std::string id = req.matches[1];
  const auto it = dispatched_.find(id);
  if (it == dispatched_.end()) return job_not_found(req, res);
  json job = stub(id);
  job.erase("JobSummary");
  job["Meta"] = it->second.meta;
  job["Dispatched"] = true;
  reply(res, 200, job);
  record(req.method, req.path, 200, "");
}

void FakeNomad::stop_job(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  const std::string id = req.matches[1];
  const auto it = dispatched_.find(id);
  if (it == dispatched_.end()) return job_not_found(req, res);
  const std::string status = stub(id)["Status"];
  it->second.stopped = true;
  const auto job = jobs_.find(it->second.parent);
  stop_process(it->second.proc, job == jobs_.end() ? std::chrono::milliseconds(5000) : job->second.kill_timeout);
  reply(res, 200, json{{"EvalID", random_hex(8)}, {"EvalCreateIndex", ++index_}, {"JobModifyIndex", index_}});
  record(req.method, req.path, 200, "stopped " + status + " job " + id);
}

FakeNomad::~FakeNomad() {
  shut();
  for (auto& [id, e] : dispatched_) kill_all(e.proc);
}

void FakeNomad::register_job(ParameterizedJob job) {
  std::lock_guard lock(mu_);
  jobs_[job.id] = std::move(job);
}

nlohmann::json FakeNomad::stub(const std::string& id) const {
  const Entry& e = dispatched_.at(id);
  const auto job = jobs_.find(e.parent);
  const std::string group = job == jobs_.end() ? "worker" : job->second.group;
  const bool dead = e.proc.exit_status.has_value();
  const int exit = e.proc.exit_status.value_or(0);
  json summary = {{"Queued", 0},
                  {"Starting", 0},
                  {"Running", dead ? 0 : 1},
                  {"Complete", dead && exit == 0 ? 1 : 0},
                  {"Failed", dead && exit != 0 ? 1 : 0},
                  {"Lost", 0},
                  {"Unknown", 0}};
  return json{{"ID", id},
              {"ParentID", e.parent},
              {"Name", id},
              {"Namespace", e.namespace_name},
              {"Type", "batch"},
              {"Status", dead ? "dead" : "running"},
              {"Stop", e.stopped},
              {"JobSummary", {{"JobID", id}, {"Namespace", e.namespace_name}, {"Summary", {{group, summary}}}}},
              {"CreateIndex", e.index},
              {"ModifyIndex", e.index}};
}

void FakeNomad::tick() {
  for (auto& [id, e] : dispatched_) supervise(e.proc);
}

std::string FakeNomad::error_body(int, const std::string& message) const { return message; }

bool FakeNomad::authorized(const std::string&, const std::string& nomad_token) const { return nomad_token == o_.token; }

std::vector<FakeNomad::Dispatch> FakeNomad::dispatches() const {
  std::lock_guard lock(mu_);
  std::vector<Dispatch> out;
  for (const auto& [id, e] : dispatched_) {
    out.push_back(Dispatch{id, e.proc.exit_status ? "dead" : "running", e.stopped,
                           e.proc.process ? e.proc.process->pid() : 0, e.meta});
  }
  return out;
}

}  // namespace conveyor::testing
