#include "cluster_api.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "conveyor/text/text.hpp"

namespace conveyor::workerpool {

std::string url_encode(std::string_view s) {
  std::string out;
  for (const unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

namespace {

// The API's own explanation: Kubernetes answers a Status object
// ({"kind":"Status","message":...}), Nomad plain text.
std::string api_message(const std::string& body) {
  std::string text = body;
  try {
    const Json j = text::parse_json(body, text::JsonLimits{.max_bytes = 1u << 20});
    if (j.is_object() && j.contains("message") && j["message"].is_string()) text = j["message"].get<std::string>();
  } catch (const Error&) {
    // not JSON: keep the text
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  if (text.size() > 300) text = text.substr(0, 300) + "...";
  return text;
}

std::string reason_phrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "";
  }
}

}  // namespace

Json ApiClient::call(const std::string& method, const std::string& path, const Json* body,
                     std::initializer_list<int> ok) const {
  std::map<std::string, std::string> headers;
  if (endpoint_.auth_headers) headers = endpoint_.auth_headers();
  headers["Accept"] = "application/json";
  const std::string payload = body ? body->dump() : std::string();
  if (body) headers["Content-Type"] = "application/json";
  const std::string what = endpoint_.name + ": " + method + " " + path;
  http::ClientResponse r;
  try {
    r = http::http_request(method, endpoint_.base_url + path, payload, headers, endpoint_.timeout, endpoint_.tls);
  } catch (const Error& e) {
    throw Error(e.code(), endpoint_.name + ": " + e.what());
  }
  if (std::find(ok.begin(), ok.end(), r.status) == ok.end()) {
    const std::string phrase = reason_phrase(r.status);
    const std::string message = api_message(r.body);
    throw ApiError(r.status, fmt::format("{}: {}{}{}", what, r.status, phrase.empty() ? "" : " " + phrase,
                                         message.empty() ? "" : ": " + message));
  }
  if (r.body.empty()) return Json();
  try {
    return text::parse_json(r.body, text::JsonLimits{.max_bytes = kMaxApiResponseBytes});
  } catch (const Error& e) {
    throw Error(errc::unavailable, what + ": the answer is not valid JSON: " + e.what());
  }
}

std::chrono::milliseconds Backoff::failed(Clock::time_point now) {
  ++failures_;
  const auto wait = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1000LL << std::min(failures_ - 1, 5)),
                                                        std::chrono::seconds(30));
  until_ = now + wait;
  return wait;
}

std::string json_string(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string dns_name(std::string_view name) {
  std::string out;
  for (const unsigned char c : name) {
    const char l = static_cast<char>(std::tolower(c));
    out += (std::isalnum(static_cast<unsigned char>(l)) || l == '-' || l == '.') ? l : '-';
  }
  if (out.size() > 253) out.resize(253);
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.front()))) out.erase(out.begin());
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.back()))) out.pop_back();
  return out.empty() ? "worker" : out;
}

}  // namespace conveyor::workerpool
