# conveyor_service(<executable> LIB <library> SOURCES <files...>)
#
# The layout every service (and the CLI) follows: the logic in <library>
# (linked by the tests, headers in src/), and <executable> built from
# main.cpp, which only wires it. Add a target's own needs after the call
# (e.g. target_link_libraries(<library> PRIVATE OpenSSL::Crypto)).
function(conveyor_service exe)
  cmake_parse_arguments(ARG "" "LIB" "SOURCES" ${ARGN})
  if(NOT ARG_LIB OR NOT ARG_SOURCES)
    message(FATAL_ERROR "conveyor_service(${exe}): LIB and SOURCES are required")
  endif()
  add_library(${ARG_LIB} ${ARG_SOURCES})
  target_include_directories(${ARG_LIB} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(${ARG_LIB} PUBLIC conveyor::core PRIVATE conveyor::options)
  add_executable(${exe} main.cpp)
  target_link_libraries(${exe} PRIVATE ${ARG_LIB} conveyor::options)
endfunction()
