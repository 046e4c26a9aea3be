#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) {
  return conveyor::cli::run_cli(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
