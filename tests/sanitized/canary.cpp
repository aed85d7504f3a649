// Proves that the sanitized subset is instrumented: each mode commits one error that only a sanitizer
// sees, and ctest (tests/sanitized/CMakeLists.txt) passes only when the report names it. Without this, a
// build that silently lost its -fsanitize flags would pass every sanitized test.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: sanitizer_canary heap-overflow|signed-overflow\n");
    return 2;
  }
  volatile int index = 4;  // volatile: the compiler must not see the error at compile time
  if (std::strcmp(argv[1], "heap-overflow") == 0) {
    std::vector<int> v(4, 0);
    return v.data()[index];  // one past the end: ASan's heap-buffer-overflow
  }
  if (std::strcmp(argv[1], "signed-overflow") == 0) {
    volatile int big = std::numeric_limits<int>::max();
    return big + index;  // UBSan's signed integer overflow
  }
  std::fprintf(stderr, "sanitizer_canary: unknown mode %s\n", argv[1]);
  return 2;
}
