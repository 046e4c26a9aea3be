// conveyor-publication: wiring only; the logic is in publication_lib (src/publication.hpp).
#include "publication.hpp"

#include "conveyor/runtime/runtime.hpp"

int main(int argc, char** argv) {
  return conveyor::runtime::run(argc, argv, conveyor::publication::spec(), conveyor::publication::setup,
                                conveyor::publication::loop);
}
