#include "conveyor/bus/cloudevent.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "conveyor/error/error.hpp"

namespace conveyor::bus {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

CloudEvent sample() {
  CloudEvent event;
  event.id = "outbox-42";
  event.source = "/conveyor/relay";
  event.type = "io.conveyor.job.processed";
  event.subject = "1234";
  event.time = "2024-05-01T12:34:56.789Z";
  event.data = {{"job_id", 1234}, {"status", "processed"}, {"params", {{"tile", "T31TCJ"}}}};
  return event;
}

// The message of the Error that decode(text) throws; fails the test if it
// does not throw bad_input.
std::string rejection(const std::string& text) {
  try {
    decode(text);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::bad_input) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "decode accepted: " << text;
  return {};
}

// A valid envelope as JSON, to be broken one attribute at a time.
json valid() { return json::parse(encode(sample())); }

TEST(CloudEvent, RoundTripKeepsEveryAttribute) {
  CloudEvent in = sample();
  CloudEvent out = decode(encode(in));
  EXPECT_EQ(out.id, in.id);
  EXPECT_EQ(out.source, in.source);
  EXPECT_EQ(out.type, in.type);
  EXPECT_EQ(out.subject, in.subject);
  EXPECT_EQ(out.time, in.time);
  EXPECT_EQ(out.datacontenttype, "application/json");
  EXPECT_EQ(out.schemaversion, kEventSchemaVersion);
  EXPECT_EQ(out.data, in.data);
}

TEST(CloudEvent, EncodeWritesStructuredEnvelope) {
  json envelope = json::parse(encode(sample()));
  EXPECT_EQ(envelope["specversion"], "1.0");
  EXPECT_EQ(envelope["id"], "outbox-42");
  EXPECT_EQ(envelope["subject"], "1234");
  EXPECT_TRUE(envelope["schemaversion"].is_number_integer());
  EXPECT_EQ(envelope["schemaversion"], kEventSchemaVersion);
  EXPECT_TRUE(envelope["data"].is_object());
  EXPECT_EQ(envelope["data"]["params"]["tile"], "T31TCJ");
}

TEST(CloudEvent, EncodeOmitsEmptyOptionalAttributes) {
  CloudEvent event = sample();
  event.subject.clear();
  event.time.clear();
  event.data = nullptr;
  json envelope = json::parse(encode(event));
  EXPECT_FALSE(envelope.contains("subject"));
  EXPECT_FALSE(envelope.contains("time"));
  EXPECT_FALSE(envelope.contains("data"));

  CloudEvent out = decode(envelope.dump());
  EXPECT_EQ(out.subject, "");
  EXPECT_EQ(out.time, "");
  EXPECT_TRUE(out.data.is_null());
}

// The relay hands over PostgreSQL's jsonb text as it is: the envelope holds
// the same values as the one the parsed value gives (the text's spacing
// and key order are kept), with the data first; a text of null is no data.
TEST(CloudEvent, DataGivenAsTextMakesTheSameEnvelopeAsTheParsedValue) {
  CloudEvent parsed = sample();
  CloudEvent as_text = sample();
  as_text.data = nullptr;
  as_text.data_json = R"({"tile": "T31TCJ", "nested": {"b": [1, 2], "a": null}})";
  parsed.data = json::parse(as_text.data_json);
  const std::string text = encode(as_text);
  EXPECT_EQ(json::parse(text), json::parse(encode(parsed)));
  EXPECT_EQ(text.rfind(R"({"data":{"tile": "T31TCJ")", 0), 0u) << text;
  EXPECT_EQ(decode(text).data, parsed.data);
  as_text.subject.clear();
  EXPECT_EQ(json::parse(encode(as_text)).count("subject"), 0u);
  as_text.data_json = "null";
  EXPECT_EQ(json::parse(encode(as_text)).count("data"), 0u);
}

// encode() writes the envelope straight into a string (the relay encodes
// every event); its bytes are those of the envelope as a JSON object dumped
// with sorted keys, the data spliced in first when given as text: the
// encoding before it was rewritten, kept here as the reference.
std::string reference_encode(const CloudEvent& event) {
  json envelope = {{"specversion", "1.0"}, {"id", event.id}, {"source", event.source}, {"type", event.type}};
  if (!event.subject.empty()) envelope["subject"] = event.subject;
  if (!event.time.empty()) envelope["time"] = event.time;
  if (!event.datacontenttype.empty()) envelope["datacontenttype"] = event.datacontenttype;
  envelope["schemaversion"] = event.schemaversion;
  const bool data_text = !event.data_json.empty() && event.data_json != "null";
  if (event.data_json.empty() && !event.data.is_null()) envelope["data"] = event.data;
  std::string text = envelope.dump(-1, ' ', false, json::error_handler_t::replace);
  if (!data_text) return text;
  return "{\"data\":" + event.data_json + "," + text.substr(1);
}

TEST(CloudEvent, EncodeWritesTheBytesOfTheSortedEnvelope) {
  const std::vector<std::string> strings = {"",
                                            "outbox-42",
                                            "io.conveyor.job.done",
                                            "with \"quotes\" and \\",
                                            "tab\there\nnewline\x01\x1f",
                                            "caf\xc3\xa9 \xe6\x97\xa5",
                                            "bad \xff byte \xc3",
                                            "del \x7f",
                                            "/conveyor/creation"};
  int cases = 0;
  for (const auto& text : strings) {
    for (int variant = 0; variant < 6; ++variant) {
      CloudEvent e = sample();
      e.id = variant == 0 ? text : e.id;
      e.source = variant == 1 ? text : e.source;
      e.type = variant == 2 ? text : e.type;
      e.subject = variant == 3 ? text : (variant == 4 ? "" : e.subject);
      e.time = variant == 4 ? text : (variant == 5 ? "" : e.time);
      e.datacontenttype = variant == 5 ? text : "";
      for (int data = 0; data < 4; ++data) {
        e.data = data == 1 ? json{{"log", text}, {"n", 3}} : json();
        e.data_json = data == 2 ? R"({"job_id": 7, "nested": {"b": [1, 2]}})" : (data == 3 ? "null" : "");
        e.schemaversion = 1 + data;
        EXPECT_EQ(encode(e), reference_encode(e)) << "variant " << variant << ", data " << data << ", " << text;
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 216);
}

TEST(CloudEvent, EncodeSurvivesInvalidUtf8InData) {
  CloudEvent event = sample();
  event.data = {{"log", std::string("bad \xff byte")}};
  EXPECT_NO_THROW(decode(encode(event)));
}

TEST(CloudEvent, DecodeAcceptsUnknownExtensionsAndMissingOptionals) {
  json envelope = {
      {"specversion", "1.0"},           {"id", "x"},        {"source", "/other"}, {"type", "com.example.thing"},
      {"traceparent", "00-abc-def-01"}, {"partitionkey", 7}};
  CloudEvent out = decode(envelope.dump());
  EXPECT_EQ(out.id, "x");
  EXPECT_EQ(out.schemaversion, 1);  // events from before versioning
  EXPECT_EQ(out.datacontenttype, "application/json");
}

TEST(CloudEvent, DecodeAcceptsStringDataForTextContent) {
  json envelope = valid();
  envelope["datacontenttype"] = "text/plain";
  envelope["data"] = "hello";
  EXPECT_EQ(decode(envelope.dump()).data, "hello");
}

TEST(CloudEvent, RejectsInvalidJson) {
  EXPECT_THAT(rejection("{\"specversion\": "), HasSubstr("malformed JSON"));
  EXPECT_THAT(rejection(""), HasSubstr("malformed JSON"));
}

TEST(CloudEvent, RejectsNonObject) {
  EXPECT_THAT(rejection("[1,2]"), HasSubstr("not a JSON object"));
  EXPECT_THAT(rejection("\"text\""), HasSubstr("not a JSON object"));
}

TEST(CloudEvent, RejectsMissingRequiredAttributes) {
  for (const char* name : {"specversion", "id", "source", "type"}) {
    json envelope = valid();
    envelope.erase(name);
    EXPECT_THAT(rejection(envelope.dump()), HasSubstr(std::string("missing required attribute '") + name + "'"));
  }
}

TEST(CloudEvent, RejectsNonStringRequiredAttributes) {
  for (const char* name : {"specversion", "id", "source", "type"}) {
    json envelope = valid();
    envelope[name] = 17;
    EXPECT_THAT(rejection(envelope.dump()), HasSubstr(std::string("attribute '") + name + "' must be a string"));
  }
}

TEST(CloudEvent, RejectsEmptyRequiredAttributes) {
  for (const char* name : {"id", "source", "type"}) {
    json envelope = valid();
    envelope[name] = "";
    EXPECT_THAT(rejection(envelope.dump()), HasSubstr(std::string("attribute '") + name + "' must not be empty"));
  }
}

TEST(CloudEvent, RejectsOtherSpecVersion) {
  json envelope = valid();
  envelope["specversion"] = "0.3";
  std::string message = rejection(envelope.dump());
  EXPECT_THAT(message, HasSubstr("unsupported specversion '0.3'"));
  EXPECT_THAT(message, HasSubstr("cloudevent: "));
}

TEST(CloudEvent, RejectsNonIntegerSchemaVersion) {
  for (json bad : {json("1"), json(1.5), json(true), json::object()}) {
    json envelope = valid();
    envelope["schemaversion"] = bad;
    EXPECT_THAT(rejection(envelope.dump()), HasSubstr("attribute 'schemaversion' must be an integer"));
  }
  json envelope = valid();
  envelope["schemaversion"] = 0;
  EXPECT_THAT(rejection(envelope.dump()), HasSubstr("'schemaversion' out of range"));
}

TEST(CloudEvent, RejectsNonStringOptionalAttributes) {
  for (const char* name : {"subject", "time", "datacontenttype"}) {
    json envelope = valid();
    envelope[name] = 5;
    EXPECT_THAT(rejection(envelope.dump()), HasSubstr(std::string("attribute '") + name + "' must be a string"));
  }
}

TEST(CloudEvent, RejectsMalformedTime) {
  json envelope = valid();
  envelope["time"] = "yesterday";
  EXPECT_THAT(rejection(envelope.dump()), HasSubstr("'time' is not an RFC 3339 timestamp"));
}

// Issue 9: the poison messages that crashed every service, refused in
// linear time with no recursion.
TEST(CloudEvent, RejectsPoisonWithoutCrashing) {
  json envelope = valid();
  envelope["time"] = "2026-01-01T00:00:00." + std::string(200000, '7') + "Z";
  EXPECT_THAT(rejection(envelope.dump()), HasSubstr("'time' is not an RFC 3339 timestamp"));

  std::string deep = R"({"specversion":"1.0","id":"x","source":"s","type":"t","data":)";
  for (int i = 0; i < 150000; ++i) deep += "[";
  for (int i = 0; i < 150000; ++i) deep += "]";
  deep += "}";
  EXPECT_THAT(rejection(deep), HasSubstr("nested deeper than"));

  EXPECT_THAT(rejection(std::string(kMaxEventBytes + 1, ' ')), HasSubstr("larger than the limit"));
}

TEST(CloudEvent, RejectsStructuredDataForNonJsonContentType) {
  json envelope = valid();
  envelope["datacontenttype"] = "text/plain";
  EXPECT_THAT(rejection(envelope.dump()), HasSubstr("'data' must be a string"));
}

TEST(CloudEvent, RejectsBinaryData) {
  json envelope = valid();
  envelope.erase("data");
  envelope["data_base64"] = "aGVsbG8=";
  EXPECT_THAT(rejection(envelope.dump()), HasSubstr("data_base64"));
}

}  // namespace
}  // namespace conveyor::bus
