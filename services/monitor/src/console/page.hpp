#pragma once
// The console's common parts (issue 15, item 1): the page frame with its
// navigation, the action buttons, the same-origin check of actions, and
// small formatting helpers. Every page is rendered here on the server; the
// only script is the console's own (actions and the live log tail), which
// writes text with textContent. Every value goes through html_escape
// (dashboard.hpp). Thread-safe: stateless functions.
#include <string>
#include <string_view>

#include "conveyor/http/server.hpp"

namespace conveyor::monitor::console {

// The page `title` inside the console's frame: nav (with `active` marked),
// who is logged in, and the action script. Cache-Control no-store, no framing.
http::Response html_page(const http::Request& req, std::string_view active, std::string_view title,
                         const std::string& body);

// true when the request's token (or session) is an operator's.
bool is_operator(const http::Request& req);

// A button that POSTs {} as JSON to `path` (the server refuses form posts) and
// reloads the page, or shows the error next to it. Shown to operators only;
// `confirm` (may be empty) is asked first.
std::string action_button(const http::Request& req, const std::string& path, std::string_view label,
                          std::string_view confirm = "");

// Actions come from the console's own pages: a request whose Origin (or,
// without one, Referer) names another host is refused (403). The cookie is
// SameSite=Strict and a JSON body needs a CORS preflight the server never
// grants, so this is the third line, not the only one.
void require_same_origin(const http::Request& req);

// "2026-12-03T10:00:00.123456Z" -> "2026-12-03 10:00:00" (UTC, as the CLI shows).
std::string short_time(std::string_view rfc3339);

// <span class="st st-done">done</span>
std::string status_badge(std::string_view status);

// The query parameter `name` cut to `max` bytes ("" when absent).
std::string bounded_param(const http::Request& req, const std::string& name, std::size_t max = 200);

// "a=1&b=x%20y" from pairs whose values are not empty.
std::string query_string(std::initializer_list<std::pair<std::string_view, std::string>> pairs);

}  // namespace conveyor::monitor::console
