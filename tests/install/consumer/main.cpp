#include <cstdio>

#include <kvtier/core.hpp>

int main() {
  constexpr auto shape = kvtier::shapes::llama3_8b();
  std::printf("%zu bytes per token\n", shape.bytes_per_token());
  return shape.bytes_per_token() == 131072 ? 0 : 1;
}
