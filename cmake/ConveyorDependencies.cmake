# Every third-party library comes from a Debian package and is found as an
# imported target here; the one module that wraps it links it PRIVATE.
#   apt-get install libpqxx-dev libpq-dev librdkafka-dev libcpp-httplib-dev
#                   nlohmann-json3-dev libspdlog-dev libgtest-dev libgmock-dev libvalijson-dev
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
# JSON Schema validation of job params (libs/core model/job_type.cpp); header-only.
find_package(valijson REQUIRED)
find_package(spdlog 1.10 REQUIRED)
# HMAC-SHA256 signatures of webhook sinks (services/job-publication).
find_package(OpenSSL REQUIRED)
pkg_check_modules(PQXX REQUIRED IMPORTED_TARGET libpqxx>=6.4)
# libpq itself, for PQconninfoParse (db::libpq_environment).
pkg_check_modules(PQ REQUIRED IMPORTED_TARGET libpq)
pkg_check_modules(RDKAFKA REQUIRED IMPORTED_TARGET rdkafka>=2.0)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib>=0.11)
if(CONVEYOR_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
