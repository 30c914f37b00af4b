// SPDX-License-Identifier: Apache-2.0
#pragma once
// Read-only memory mapping of a whole file (POSIX), shared by the safetensors and IDX readers.
// RAII and move-only. An empty file is "mapped" as an empty span, since mmap rejects length 0.
// If another process truncates the file while it is mapped, touching the lost pages raises
// SIGBUS: that is the price of zero-copy reading, the same as in every mmap-based loader.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

#include "vitcompress/core/error.hpp"

namespace vitc::io::detail {

class MappedFile {
 public:
  MappedFile() = default;

  // Maps `path`; throws IoError naming `what` and the path if it cannot be opened or mapped.
  static MappedFile open(const std::filesystem::path& path, const std::string& what) {
    auto fail = [&](const std::string& action, int error) {
      VITC_THROW(IoError("cannot " + action + " " + what + " '" + path.string() +
                         "': " + std::strerror(error)));
    };
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("open", errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int error = errno;
      ::close(fd);
      fail("stat", error);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      VITC_THROW(IoError("cannot read " + what + " '" + path.string() + "': not a regular file"));
    }
    MappedFile file;
    file.size_ = static_cast<std::size_t>(st.st_size);
    if (file.size_ > 0) {
      void* addr = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (addr == MAP_FAILED) {
        const int error = errno;
        ::close(fd);
        fail("map", error);
      }
      file.addr_ = addr;
    }
    ::close(fd);  // the mapping keeps the file alive
    return file;
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      addr_ = std::exchange(other.addr_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { unmap(); }

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(addr_), addr_ ? size_ : 0};
  }

 private:
  void unmap() noexcept {
    if (addr_) ::munmap(addr_, size_);
    addr_ = nullptr;
    size_ = 0;
  }

  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace vitc::io::detail
