// A program that only sees the installed package.
#include <vitcompress/vitcompress.hpp>

int main() {
  vitc::Tensor<float, 2> t({2, 3});
  t(1, 2) = 5.0f;
  return t.view().at(1, 2) == 5.0f ? 0 : 1;
}
