// sink_allowed_hosts (issue 12): how entries are judged and matched.
#include "conveyor/model/system_parameters.hpp"

#include <gtest/gtest.h>

namespace {

using conveyor::model::canonical_host;
using conveyor::model::SystemParameters;
using conveyor::model::valid_sink_host_entry;

SystemParameters with_hosts(std::vector<std::string> hosts) {
  SystemParameters p;
  p.sink_allowed_hosts = std::move(hosts);
  return p;
}

TEST(SinkAllowedHosts, UnsetOrEmptyAllowsEveryHost) {
  SystemParameters p;
  EXPECT_TRUE(p.sink_host_allowed("evil.example"));
  p.sink_allowed_hosts = std::vector<std::string>{};
  EXPECT_TRUE(p.sink_host_allowed("evil.example"));
  EXPECT_EQ(p.to_json().at("sink_allowed_hosts"), nlohmann::json::array());
  EXPECT_TRUE(SystemParameters{}.to_json().at("sink_allowed_hosts").is_null());
}

TEST(SinkAllowedHosts, ANameMatchesItselfOnlyWhateverTheCaseAndTrailingDot) {
  const auto p = with_hosts({"Hooks.Example.org"});
  EXPECT_TRUE(p.sink_host_allowed("hooks.example.org"));
  EXPECT_TRUE(p.sink_host_allowed("HOOKS.EXAMPLE.ORG"));
  EXPECT_TRUE(p.sink_host_allowed("hooks.example.org."));
  EXPECT_FALSE(p.sink_host_allowed("example.org"));
  EXPECT_FALSE(p.sink_host_allowed("x.hooks.example.org"));
  EXPECT_FALSE(p.sink_host_allowed("hooks.example.org.evil.com"));
  EXPECT_FALSE(p.sink_host_allowed("evilhooks.example.org"));
  EXPECT_FALSE(p.sink_host_allowed(""));
}

TEST(SinkAllowedHosts, ADotSuffixMatchesHostsUnderItAtALabelBoundary) {
  const auto p = with_hosts({".example.org"});
  EXPECT_TRUE(p.sink_host_allowed("hooks.example.org"));
  EXPECT_TRUE(p.sink_host_allowed("a.b.EXAMPLE.org."));
  EXPECT_FALSE(p.sink_host_allowed("example.org"));  // under it, not itself
  EXPECT_FALSE(p.sink_host_allowed("evilexample.org"));
  EXPECT_FALSE(p.sink_host_allowed("example.org.evil.com"));
}

TEST(SinkAllowedHosts, AddressesMatchWholeAndIpv6InAnyForm) {
  const auto p = with_hosts({"127.0.0.1", "[::1]", "2001:db8::1"});
  EXPECT_TRUE(p.sink_host_allowed("127.0.0.1"));
  EXPECT_FALSE(p.sink_host_allowed("127.0.0.2"));
  EXPECT_FALSE(p.sink_host_allowed("127.1"));  // another spelling: refused, never wrongly let through
  EXPECT_TRUE(p.sink_host_allowed("::1"));
  EXPECT_TRUE(p.sink_host_allowed("[0:0:0:0:0:0:0:1]"));
  EXPECT_TRUE(p.sink_host_allowed("2001:DB8:0::1"));
  EXPECT_FALSE(p.sink_host_allowed("::2"));
  // A suffix never matches an address.
  EXPECT_FALSE(with_hosts({".0.0.1"}).sink_host_allowed("127.0.0.1"));
}

TEST(SinkAllowedHosts, CanonicalHost) {
  EXPECT_EQ(canonical_host("Hooks.Example.ORG."), "hooks.example.org");
  EXPECT_EQ(canonical_host("[0:0::1]"), "::1");
  EXPECT_EQ(canonical_host("localhost"), "localhost");
}

TEST(SinkAllowedHosts, EntriesAreHostNamesAddressesOrSuffixes) {
  std::string why;
  for (const char* ok : {"hooks.example.org", ".example.org", "localhost", "127.0.0.1", "::1", "[2001:db8::1]",
                         "my_host-1.internal", "example.org."}) {
    EXPECT_TRUE(valid_sink_host_entry(ok, why)) << ok << ": " << why;
  }
  for (const char* bad :
       {"", ".", "https://hooks.example.org", "hooks.example.org:443", "hooks.example.org/path", "*.example.org",
        "user@hooks.example.org", "hooks example.org", "a..b", ".0.1", "[::1]:80", "hooks.example.org\n"}) {
    why.clear();
    EXPECT_FALSE(valid_sink_host_entry(bad, why)) << "'" << bad << "' was accepted";
    EXPECT_FALSE(why.empty()) << bad;
  }
  EXPECT_FALSE(valid_sink_host_entry("*.example.org", why));
  EXPECT_NE(why.find(".example.org"), std::string::npos) << why;
}

}  // namespace
