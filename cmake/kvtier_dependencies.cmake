# Finds kvtier's third-party dependencies; shared by the build and by kvtierConfig.cmake.
include_guard(GLOBAL)
include(CMakeFindDependencyMacro)
find_dependency(range-v3 CONFIG)
find_package(PkgConfig QUIET)

# xxHash (XXH3-128 page keys and checksums). Debian ships a pkg-config file, no CMake config.
if(NOT TARGET kvtier::xxhash)
  find_path(KVTIER_XXHASH_INCLUDE xxhash.h)
  find_library(KVTIER_XXHASH_LIB xxhash)
  if(NOT KVTIER_XXHASH_INCLUDE OR NOT KVTIER_XXHASH_LIB)
    message(FATAL_ERROR "kvtier needs xxHash: apt-get install libxxhash-dev")
  endif()
  add_library(kvtier::xxhash UNKNOWN IMPORTED GLOBAL)
  set_target_properties(kvtier::xxhash PROPERTIES
    IMPORTED_LOCATION ${KVTIER_XXHASH_LIB}
    INTERFACE_INCLUDE_DIRECTORIES ${KVTIER_XXHASH_INCLUDE})
endif()

# liburing (file tier). Optional: without it kvtier::file is not defined.
if(NOT TARGET kvtier::uring)
  find_path(KVTIER_URING_INCLUDE liburing.h)
  find_library(KVTIER_URING_LIB uring)
  if(KVTIER_URING_INCLUDE AND KVTIER_URING_LIB)
    add_library(kvtier::uring UNKNOWN IMPORTED GLOBAL)
    set_target_properties(kvtier::uring PROPERTIES
      IMPORTED_LOCATION ${KVTIER_URING_LIB}
      INTERFACE_INCLUDE_DIRECTORIES ${KVTIER_URING_INCLUDE})
  endif()
endif()

# hiredis (Redis tier). Optional. Debian's HiredisConfig.cmake defines no target, so make one.
if(NOT TARGET kvtier::hiredis)
  find_path(KVTIER_HIREDIS_INCLUDE hiredis/hiredis.h)
  find_library(KVTIER_HIREDIS_LIB hiredis)
  if(KVTIER_HIREDIS_INCLUDE AND KVTIER_HIREDIS_LIB)
    add_library(kvtier::hiredis UNKNOWN IMPORTED GLOBAL)
    set_target_properties(kvtier::hiredis PROPERTIES
      IMPORTED_LOCATION ${KVTIER_HIREDIS_LIB}
      INTERFACE_INCLUDE_DIRECTORIES ${KVTIER_HIREDIS_INCLUDE})
  endif()
endif()
