# Writes a C++ source that holds a file's bytes, so that a library can serve
# the file without reading it from disk at run time (deploy/api/openapi.json:
# GET /openapi.json). Run at build time by add_custom_command:
#   cmake -DINPUT=<file> -DOUTPUT=<.cpp> -DNAMESPACE=<ns> -DFUNCTION=<name> -P EmbedFile.cmake
# The source defines `std::string_view <ns>::<name>()` returning the bytes.
# Bytes, not a string literal: the file may hold any sequence of characters.
foreach(var INPUT OUTPUT NAMESPACE FUNCTION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "EmbedFile.cmake: -D${var}=... is required")
  endif()
endforeach()
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
if(hex_length EQUAL 0)
  message(FATAL_ERROR "EmbedFile.cmake: ${INPUT} is empty")
endif()
# Sixteen bytes a line.
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n  " bytes "${bytes}")
file(WRITE "${OUTPUT}"
  "// Generated from ${INPUT} by cmake/EmbedFile.cmake; do not edit.\n"
  "#include <string_view>\n\n"
  "namespace ${NAMESPACE} {\n"
  "namespace {\n"
  "constexpr unsigned char kBytes[] = {\n  ${bytes}\n};\n"
  "}  // namespace\n\n"
  "std::string_view ${FUNCTION}() {\n"
  "  return {reinterpret_cast<const char*>(kBytes), sizeof kBytes};\n"
  "}\n\n"
  "}  // namespace ${NAMESPACE}\n")
