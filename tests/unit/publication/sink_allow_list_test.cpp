// The host a webhook delivery reaches, read the way the HTTP client reads
// the URL, judged against sink_allowed_hosts with hostile URLs (issue 12).
#include <gtest/gtest.h>

#include "publication.hpp"

namespace {

using conveyor::model::SystemParameters;
using conveyor::publication::sink_refusal;
using conveyor::publication::webhook_host;

SystemParameters allowing(std::vector<std::string> hosts) {
  SystemParameters p;
  p.sink_allowed_hosts = std::move(hosts);
  return p;
}

TEST(WebhookHost, SchemeUserinfoPortPathAndCase) {
  EXPECT_EQ(webhook_host("http://hooks.example.org/x"), "hooks.example.org");
  EXPECT_EQ(webhook_host("HTTPS://HOOKS.Example.org:8443/x?y=1#z"), "hooks.example.org");
  EXPECT_EQ(webhook_host("http://hooks.example.org"), "hooks.example.org");
  EXPECT_EQ(webhook_host("http://hooks.example.org./x"), "hooks.example.org");
  EXPECT_EQ(webhook_host("http://user:pa:ss@hooks.example.org:80/"), "hooks.example.org");
  EXPECT_EQ(webhook_host("http://[::1]:8080/hook"), "::1");
  EXPECT_EQ(webhook_host("http://[0:0:0:0:0:0:0:1]/"), "::1");
  EXPECT_EQ(webhook_host("http://127.0.0.1:9/hook"), "127.0.0.1");
}

TEST(WebhookHost, TheHostIsWhatTheClientConnectsTo) {
  // userinfo ends at the authority's last '@'.
  EXPECT_EQ(webhook_host("http://allowed.example@evil.com/"), "evil.com");
  EXPECT_EQ(webhook_host("http://allowed.example:443@evil.com/"), "evil.com");
  EXPECT_EQ(webhook_host("http://a@allowed.example@evil.com/"), "evil.com");
  // The authority ends at the first '/', '?' or '#': what follows is not the host.
  EXPECT_EQ(webhook_host("http://evil.com#@allowed.example"), "evil.com");
  EXPECT_EQ(webhook_host("http://evil.com?@allowed.example/"), "evil.com");
  EXPECT_EQ(webhook_host("http://evil.com/@allowed.example/"), "evil.com");
  // The client takes a backslash as part of the userinfo, not as a slash.
  EXPECT_EQ(webhook_host("http://evil.com\\@allowed.example/"), "allowed.example");
}

TEST(WebhookHost, WhatCannotBeReadIsNoHost) {
  for (const std::string& bad : std::vector<std::string>{
           "", "hooks.example.org", "ftp://hooks.example.org/", "file:///etc/passwd", "http:///x", "http://@/x",
           "http://hooks.example.org:/x", "http://hooks.example.org:80:81/", "http://hooks.example.org:http/",
           "http://hooks.example.org:123456/", "http://hooks%2eexample.org/", "http://hooks.example.org%00.evil.com/",
           std::string("http://allowed.example\0.evil.com/", 33), "http://all owed.example/", "http://[::1/",
           "http://[::1]x/", "http://[evil.com]/", " http://hooks.example.org/",
           "http://xn--hks-qoa.example.org\xC3\xB6/"}) {
    EXPECT_FALSE(webhook_host(bad).has_value()) << "'" << bad << "' gave " << webhook_host(bad).value_or("");
  }
}

TEST(SinkRefusal, AnEmptyListAllowsEveryUrlEvenAnUnreadableOne) {
  SystemParameters p;
  EXPECT_FALSE(sink_refusal("http://evil.com/", p));
  p.sink_allowed_hosts = std::vector<std::string>{};
  EXPECT_FALSE(sink_refusal("http://evil.com/", p));
  EXPECT_FALSE(sink_refusal("not a url", p));
}

TEST(SinkRefusal, HostileUrlsAreRefusedNamingTheHostOnly) {
  const auto p = allowing({"allowed.example", ".hooks.example.org"});
  EXPECT_FALSE(sink_refusal("http://allowed.example/hook", p));
  EXPECT_FALSE(sink_refusal("https://ALLOWED.example.:8443/hook", p));
  EXPECT_FALSE(sink_refusal("https://a.hooks.example.org/hook", p));
  EXPECT_FALSE(sink_refusal("http://user:secret@allowed.example/", p));

  const auto refused = sink_refusal("http://allowed.example:s3cret-token@evil.com/path-token", p);
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->find("'evil.com'"), std::string::npos) << *refused;
  EXPECT_NE(refused->find("sink_allowed_hosts"), std::string::npos) << *refused;
  EXPECT_EQ(refused->find("s3cret-token"), std::string::npos) << *refused;
  EXPECT_EQ(refused->find("path-token"), std::string::npos) << *refused;

  for (const char* url :
       {"http://evil.com#@allowed.example", "http://evil.com?@allowed.example", "http://allowed.example.evil.com/",
        "http://evilallowed.example/", "http://hooks.example.org/", "http://hooks.example.org.evil.com/",
        "http://EVIL.com:80/allowed.example", "http://allowed.example%00.evil.com/", "http://[::1]/",
        "gopher://allowed.example/"}) {
    EXPECT_TRUE(sink_refusal(url, p)) << url << " was let through";
  }
}

}  // namespace
