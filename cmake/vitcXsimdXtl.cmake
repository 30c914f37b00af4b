# Debian's xsimd 8.1 target lists a plain `xtl` in its link interface without finding xtl, so a
# consumer's link line gets `-lxtl`, which does not exist. xsimd only needs xtl for optional
# xtl::xcomplex support, which vitcompress does not use: stand in an empty target when xtl is absent.
if(TARGET xsimd AND NOT TARGET xtl)
  find_package(xtl QUIET CONFIG)
  if(NOT TARGET xtl)
    add_library(xtl INTERFACE IMPORTED)
  endif()
endif()
