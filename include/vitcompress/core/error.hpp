// SPDX-License-Identifier: Apache-2.0
#pragma once
// Errors. Bad user input (files, shapes, arguments, configurations) throws a vitc::Error subclass
// whose message names the tensor, field or argument at fault; callers catch vitc::Error once at
// their entry point. Contract violations inside kernels are not exceptions: see core/check.hpp.
//
// Hosts built without exceptions get an abort with the message instead; a host may define
// VITC_THROW(exception_object) itself before including any vitcompress header.

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

namespace vitc {

// Stable codes, usable as process exit codes by command-line tools.
enum class ErrorCode : int {
  kFormat = 2,    // a file or buffer does not follow its format
  kShape = 3,     // tensor shapes disagree with each other or with a configuration
  kArgument = 4,  // a value is out of range or otherwise unusable
  kIo = 5,        // a file cannot be opened, mapped or written
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  [[nodiscard]] ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

class FormatError : public Error {
 public:
  explicit FormatError(const std::string& message) : Error(ErrorCode::kFormat, message) {}
};

class ShapeError : public Error {
 public:
  explicit ShapeError(const std::string& message) : Error(ErrorCode::kShape, message) {}
};

class ArgumentError : public Error {
 public:
  explicit ArgumentError(const std::string& message) : Error(ErrorCode::kArgument, message) {}
};

class IoError : public Error {
 public:
  explicit IoError(const std::string& message) : Error(ErrorCode::kIo, message) {}
};

}  // namespace vitc

#ifndef VITC_THROW
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define VITC_THROW(exception_object) throw exception_object
#else
#define VITC_THROW(exception_object)                                      \
  do {                                                                    \
    std::fprintf(stderr, "vitcompress: %s\n", (exception_object).what()); \
    std::abort();                                                         \
  } while (false)
#endif
#endif
