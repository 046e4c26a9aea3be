#include "backend.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "child_process.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/text/text.hpp"

namespace conveyor::workerpool {

namespace fs = std::filesystem;

bool is_pool_only_key(std::string_view key) {
  return key.starts_with("CONVEYOR_WORKERPOOL_") || key == "CONVEYOR_WORKER_EXECUTABLE" ||
         key == "CONVEYOR_KUBECONFIG" || key == "CONVEYOR_WORKER_DATABASE_URL" ||
         key == "CONVEYOR_WORKER_DATABASE_URL_FILE";
}

std::map<std::string, std::string> worker_environment(const std::map<std::string, std::string>& environment,
                                                      const std::string& name, const std::string& pool,
                                                      const WorkerDatabase& database) {
  std::map<std::string, std::string> env;
  for (const auto& [key, value] : environment) {
    if (is_pool_only_key(key)) continue;
    env.emplace(key, value);
  }
  // The workers log in as the worker role, not as the pool's: exactly one of
  // the two forms, so the worker's config never sees both.
  if (!database.file.empty()) {
    env.erase("CONVEYOR_DATABASE_URL");
    env["CONVEYOR_DATABASE_URL_FILE"] = database.file.string();
  } else if (!database.url.empty()) {
    env.erase("CONVEYOR_DATABASE_URL_FILE");
    env["CONVEYOR_DATABASE_URL"] = database.url;
  }
  // Per process: each worker gets its own (a free HTTP port, its name as
  // instance id), never the pool's.
  env["CONVEYOR_WORKER_NAME"] = name;
  env["CONVEYOR_INSTANCE_ID"] = name;
  env["CONVEYOR_WORKER_POOL"] = pool;
  env["CONVEYOR_HTTP_PORT"] = "0";
  return env;
}

namespace {

// A small file's content, or nullopt when it cannot be read.
std::optional<std::string> slurp(const fs::path& path, std::size_t max_bytes = 1u << 20) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string s(max_bytes + 1, '\0');
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<std::size_t>(in.gcount()));
  if (s.size() > max_bytes) return std::nullopt;
  return s;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// A header supplier that reads a bearer token file at every call (projected
// service-account tokens rotate). A file that cannot be read sends no token:
// the API answers 401, which names the problem in the log.
std::function<std::map<std::string, std::string>()> bearer_from_file(fs::path file, std::string header,
                                                                     std::string prefix) {
  return [file = std::move(file), header = std::move(header), prefix = std::move(prefix)] {
    std::map<std::string, std::string> h;
    if (const auto token = slurp(file, 64 * 1024)) h[header] = prefix + trimmed(*token);
    return h;
  };
}

std::function<std::map<std::string, std::string>()> fixed_header(std::string header, std::string value) {
  return [header = std::move(header), value = std::move(value)] {
    return std::map<std::string, std::string>{{header, value}};
  };
}

// The element of a kubeconfig list ("clusters", "users", "contexts") named
// `name`, its inner object (key `inner`).
Json named(const Json& config, const char* list, const std::string& name, const char* inner, const std::string& file) {
  for (const Json& e : config.value(list, Json::array())) {
    if (json_string(e, "name") == name && e.contains(inner) && e[inner].is_object()) return e[inner];
  }
  throw Error(errc::invalid_config,
              "CONVEYOR_KUBECONFIG (" + file + "): no " + std::string(list) + " entry named '" + name + "'");
}

// Files written from a kubeconfig's data fields, in one private directory.
struct PrivateDir {
  fs::path path;
  fs::path write(const std::string& name, const std::string& content) {
    if (path.empty()) path = make_private_dir("conveyor-workerpool-kube-", "kubeconfig data");
    write_private_file(path / name, content);
    return path / name;
  }
};

// A path of the kubeconfig, relative to the kubeconfig's directory, or the
// decoded `<key>-data` field written to a private file.
std::string kube_file(const Json& obj, const std::string& key, const fs::path& dir, PrivateDir& priv,
                      const std::string& file) {
  if (const std::string data = json_string(obj, (key + "-data").c_str()); !data.empty()) {
    const auto decoded = text::base64_decode(data);
    if (!decoded)
      throw Error(errc::invalid_config, "CONVEYOR_KUBECONFIG (" + file + "): " + key + "-data is not base64");
    return priv.write(key + ".pem", *decoded).string();
  }
  const std::string path = json_string(obj, key.c_str());
  if (path.empty()) return {};
  return fs::path(path).is_absolute() ? path : (dir / path).string();
}

KubernetesBackendOptions from_kubeconfig(const std::string& file) {
  const auto content = slurp(file);
  if (!content) throw Error(errc::invalid_config, "CONVEYOR_KUBECONFIG: cannot read " + file);
  Json config;
  try {
    config = text::parse_json(*content);
  } catch (const Error& e) {
    throw Error(errc::invalid_config,
                "CONVEYOR_KUBECONFIG (" + file + ") is not JSON (" + e.what() +
                    "); give the JSON form of the kubeconfig: kubectl config view --raw --minify --flatten -o json");
  }
  std::string context_name = json_string(config, "current-context");
  if (context_name.empty()) throw Error(errc::invalid_config, "CONVEYOR_KUBECONFIG (" + file + "): no current-context");
  const Json context = named(config, "contexts", context_name, "context", file);
  const Json cluster = named(config, "clusters", json_string(context, "cluster"), "cluster", file);
  const Json user = named(config, "users", json_string(context, "user"), "user", file);
  const fs::path dir = fs::path(file).parent_path();
  PrivateDir priv;
  KubernetesBackendOptions o;
  o.api.name = "kubernetes API";
  o.api.base_url = json_string(cluster, "server");
  while (!o.api.base_url.empty() && o.api.base_url.back() == '/') o.api.base_url.pop_back();
  if (o.api.base_url.empty())
    throw Error(errc::invalid_config, "CONVEYOR_KUBECONFIG (" + file + "): cluster has no server");
  o.api.tls.ca_file = kube_file(cluster, "certificate-authority", dir, priv, file);
  o.api.tls.verify = !cluster.value("insecure-skip-tls-verify", false);
  o.api.tls.client_cert_file = kube_file(user, "client-certificate", dir, priv, file);
  o.api.tls.client_key_file = kube_file(user, "client-key", dir, priv, file);
  if (const std::string token = json_string(user, "token"); !token.empty()) {
    o.api.auth_headers = fixed_header("Authorization", "Bearer " + token);
  } else if (const std::string token_file = json_string(user, "tokenFile"); !token_file.empty()) {
    o.api.auth_headers = bearer_from_file(fs::path(token_file).is_absolute() ? fs::path(token_file) : dir / token_file,
                                          "Authorization", "Bearer ");
  } else if (o.api.tls.client_cert_file.empty()) {
    throw Error(errc::invalid_config, "CONVEYOR_KUBECONFIG (" + file + "): user '" + json_string(context, "user") +
                                          "' has neither token, tokenFile nor client certificate (exec and "
                                          "auth-provider plugins are not supported)");
  }
  o.namespace_name = json_string(context, "namespace");
  o.private_dir = priv.path;
  return o;
}

}  // namespace

KubernetesBackendOptions kubernetes_options(const config::Config& config) {
  KubernetesBackendOptions o;
  const std::string kubeconfig = config.get_string("CONVEYOR_KUBECONFIG");
  const fs::path sa_dir = config.get_string("CONVEYOR_WORKERPOOL_KUBERNETES_SERVICE_ACCOUNT_DIR");
  if (!kubeconfig.empty()) {
    o = from_kubeconfig(kubeconfig);
  } else {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (host == nullptr || *host == '\0') {
      throw Error(errc::invalid_config,
                  "CONVEYOR_WORKERPOOL_BACKEND=kubernetes: not in a cluster (KUBERNETES_SERVICE_HOST is not set) "
                  "and CONVEYOR_KUBECONFIG is empty");
    }
    const std::string h = std::string(host).find(':') != std::string::npos ? "[" + std::string(host) + "]" : host;
    o.api.name = "kubernetes API";
    o.api.base_url = "https://" + h + ":" + (port && *port ? port : "443");
    if (!fs::exists(sa_dir / "token")) {
      throw Error(errc::invalid_config, "CONVEYOR_WORKERPOOL_KUBERNETES_SERVICE_ACCOUNT_DIR: no token in " +
                                            sa_dir.string() + " (automountServiceAccountToken off?)");
    }
    o.api.auth_headers = bearer_from_file(sa_dir / "token", "Authorization", "Bearer ");
    o.api.tls.ca_file = (sa_dir / "ca.crt").string();
    if (const auto ns = slurp(sa_dir / "namespace")) o.namespace_name = trimmed(*ns);
  }
  if (const std::string ns = config.get_string("CONVEYOR_WORKERPOOL_KUBERNETES_NAMESPACE"); !ns.empty()) {
    o.namespace_name = ns;
  }
  if (o.namespace_name.empty()) o.namespace_name = "default";
  o.api.timeout = config.get_duration("CONVEYOR_WORKERPOOL_API_TIMEOUT_MS");
  o.pod_template = config.get_string("CONVEYOR_WORKERPOOL_KUBERNETES_POD_TEMPLATE");
  o.pool = config.get_string("CONVEYOR_WORKER_POOL");
  o.kill_grace = config.get_duration("CONVEYOR_WORKERPOOL_KILL_GRACE_MS");
  return o;
}

NomadBackendOptions nomad_options(const config::Config& config) {
  NomadBackendOptions o;
  o.api.name = "Nomad API";
  o.api.base_url = config.get_string("CONVEYOR_WORKERPOOL_NOMAD_ADDR");
  while (!o.api.base_url.empty() && o.api.base_url.back() == '/') o.api.base_url.pop_back();
  o.api.timeout = config.get_duration("CONVEYOR_WORKERPOOL_API_TIMEOUT_MS");
  o.api.tls.ca_file = config.get_string("CONVEYOR_WORKERPOOL_NOMAD_CA_FILE");
  const std::string token = config.get_string("CONVEYOR_WORKERPOOL_NOMAD_TOKEN");
  const std::string token_file = config.get_string("CONVEYOR_WORKERPOOL_NOMAD_TOKEN_FILE");
  if (!token.empty() && !token_file.empty()) {
    throw Error(errc::invalid_config,
                "CONVEYOR_WORKERPOOL_NOMAD_TOKEN and CONVEYOR_WORKERPOOL_NOMAD_TOKEN_FILE are both set: set one");
  }
  if (!token.empty()) {
    o.api.auth_headers = fixed_header("X-Nomad-Token", token);
  } else if (!token_file.empty()) {
    if (!slurp(token_file, 64 * 1024)) {
      throw Error(errc::invalid_config, "CONVEYOR_WORKERPOOL_NOMAD_TOKEN_FILE: cannot read " + token_file);
    }
    o.api.auth_headers = bearer_from_file(token_file, "X-Nomad-Token", "");
  }
  o.namespace_name = config.get_string("CONVEYOR_WORKERPOOL_NOMAD_NAMESPACE");
  o.region = config.get_string("CONVEYOR_WORKERPOOL_NOMAD_REGION");
  o.job = config.get_string("CONVEYOR_WORKERPOOL_NOMAD_JOB");
  o.pool = config.get_string("CONVEYOR_WORKER_POOL");
  return o;
}

WorkerDatabase worker_database(const config::Config& config, bool* shared) {
  const std::string key = "CONVEYOR_WORKER_DATABASE_URL";
  *shared = config.get_string(key).empty();
  if (*shared) return {};  // the workers inherit the pool's environment and env files
  const config::Source source = config.source(key);
  if (source.kind == config::Source::Kind::secret_file) return {{}, source.file};
  return {config.get_string(key), {}};
}

std::unique_ptr<Backend> make_backend(const config::Config& config, const std::string& instance_id,
                                      const std::vector<std::filesystem::path>& env_files) {
  const std::string kind = config.get_string("CONVEYOR_WORKERPOOL_BACKEND");
  if (kind == "kubernetes") return make_kubernetes_backend(kubernetes_options(config));
  if (kind == "nomad") return make_nomad_backend(nomad_options(config));
  LocalBackendOptions o;
  o.environment = config::process_environment();
  bool shared = false;
  o.database = worker_database(config, &shared);
  if (shared) {
    logging::get("backend")->warn(
        "CONVEYOR_WORKER_DATABASE_URL is empty: the workers connect as the pool's own database login; give them a "
        "login of conveyor_worker (conveyor db grant-login NAME --role conveyor_worker)");
  }
  const std::string configured = config.get_string("CONVEYOR_WORKER_EXECUTABLE");
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const auto path = o.environment.find("PATH");
  const auto exe = find_executable(configured, "conveyor-worker", ec ? std::filesystem::path() : self,
                                   path == o.environment.end() ? std::string() : path->second);
  if (!exe) {
    throw Error(errc::invalid_config,
                configured.empty()
                    ? "CONVEYOR_WORKER_EXECUTABLE: conveyor-worker is neither next to conveyor-workerpool, "
                      "nor in ../worker, nor on PATH; set CONVEYOR_WORKER_EXECUTABLE"
                    : "CONVEYOR_WORKER_EXECUTABLE (from " + config.source("CONVEYOR_WORKER_EXECUTABLE").to_string() +
                          "): '" + configured + "' is not an executable file");
  }
  o.executable = *exe;
  o.pool = config.get_string("CONVEYOR_WORKER_POOL");
  o.env_files = env_files;
  o.log_dir = config.get_string("CONVEYOR_WORKERPOOL_LOG_DIR");
  o.kill_grace = config.get_duration("CONVEYOR_WORKERPOOL_KILL_GRACE_MS");
  o.instance_id = instance_id;
  return make_local_backend(std::move(o));
}

}  // namespace conveyor::workerpool
