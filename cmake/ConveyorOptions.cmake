# Compiler warnings and options for project code live in one INTERFACE target
# that every project target links PRIVATE; third-party headers are SYSTEM
# includes through their imported targets, so -Werror only judges our code.
add_library(conveyor_options INTERFACE)
add_library(conveyor::options ALIAS conveyor_options)
target_compile_options(conveyor_options INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
  -Woverloaded-virtual -Wnull-dereference -Wimplicit-fallthrough
  $<$<BOOL:${CONVEYOR_WARNINGS_AS_ERRORS}>:-Werror>
  # GCC 12 at -O3 (Release) reports -Wrestrict inside libstdc++'s
  # char_traits for plain std::string concatenation (GCC bug 105329, fixed
  # in 13): a false positive, so the release build can keep -Werror.
  $<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>,$<CONFIG:Release>>:-Wno-restrict>)
target_compile_features(conveyor_options INTERFACE cxx_std_20)
# The version every executable prints (--version) and registers, in one place.
target_compile_definitions(conveyor_options INTERFACE CONVEYOR_VERSION="${PROJECT_VERSION}")
