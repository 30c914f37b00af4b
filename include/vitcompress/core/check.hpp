// SPDX-License-Identifier: Apache-2.0
#pragma once
// Internal contract checks for kernels and hot paths. They print the failing expression with its
// location and abort in debug builds, and compile to nothing under NDEBUG. They are not for user
// input: that is validated once at the entry point and reported with vitc::Error (core/error.hpp).

#include <cstdio>
#include <cstdlib>

#ifndef VITC_ASSERT
#define VITC_ASSERT(condition)                                                          \
  do {                                                                                  \
    if (!(condition)) {                                                                 \
      std::fprintf(stderr, "%s:%d: vitcompress check failed: %s\n", __FILE__, __LINE__, \
                   #condition);                                                         \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)
#endif

#ifdef NDEBUG
#define VITC_DCHECK(condition) \
  do {                         \
  } while (false && (condition))
#else
#define VITC_DCHECK(condition) VITC_ASSERT(condition)
#endif
