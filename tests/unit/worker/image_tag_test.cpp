// image_tags: the tag configuration gives a job type's image (runbook 001).
#include <gtest/gtest.h>

#include "configuration.hpp"

namespace {

using conveyor::configuration::image_with_tag;

TEST(ImageTag, TheTagReplacesTheImagesTagOrIsAdded) {
  EXPECT_EQ(image_with_tag("localhost/conveyor-example-task:dev", "v2"), "localhost/conveyor-example-task:v2");
  EXPECT_EQ(image_with_tag("tool", "2.0"), "tool:2.0");
  EXPECT_EQ(image_with_tag("registry:5000/tools/tile", "2.5"), "registry:5000/tools/tile:2.5");
  EXPECT_EQ(image_with_tag("registry:5000/tools/tile:1.0", "2.5"), "registry:5000/tools/tile:2.5");
}

TEST(ImageTag, ADigestPinnedImageTakesTheTagInsteadOfItsDigest) {
  EXPECT_EQ(image_with_tag("registry:5000/tool@sha256:0123abcd", "v2"), "registry:5000/tool:v2");
  EXPECT_EQ(image_with_tag("tool:1.0@sha256:0123abcd", "v2"), "tool:v2");
}

TEST(ImageTag, NoTagOrNoImageChangesNothing) {
  EXPECT_EQ(image_with_tag("tool:1.0", ""), "tool:1.0");
  EXPECT_EQ(image_with_tag("", "v2"), "");
}

}  // namespace
