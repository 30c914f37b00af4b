// SPDX-License-Identifier: Apache-2.0
#pragma once
// Umbrella header: everything public in vitcompress.

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/eigen_map.hpp"
#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
