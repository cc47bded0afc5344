# kvtier_add_compile_fail_test(<dotted.name> SOURCE <file.cpp|file.cu> [LIBS <targets...>]
#                              [REGEX <expected diagnostic>] [CONTROL])
#   A CTest test that passes only when SOURCE fails to compile (and, with REGEX, when the compiler's
#   diagnostic matches it). SOURCE is built, with the same flags as every other kvtier target, as an
#   EXCLUDE_FROM_ALL object library: the test runs `cmake --build <tree> --target <it>` through
#   kvtier_run_compile_fail.cmake, which inverts the result. The source is compiled with
#   KVTIER_COMPILE_FAIL defined; with CONTROL, the same source is also built in the normal build
#   WITHOUT that macro and must compile, which proves the test fails for the guarded line only:
#       #ifdef KVTIER_COMPILE_FAIL
#         launch_on_gpu(host);   // the misuse
#       #endif
#   `.cu` sources link kvtier::cuda and are skipped without a CUDA compiler. Diagnostics are read
#   with LC_ALL=C (plain ASCII quotes); write REGEX against words, e.g. "device_accessible_pool".
#   Tests carry the `compile-fail` label and one RESOURCE_LOCK, so two never build at once.
set(KVTIER_COMPILE_FAIL_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/kvtier_run_compile_fail.cmake)

function(kvtier_add_compile_fail_test name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "CONTROL" "SOURCE;REGEX" "LIBS")
  if(NOT arg_SOURCE)
    message(FATAL_ERROR "kvtier_add_compile_fail_test(${name}): no SOURCE")
  endif()
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "kvtier_add_compile_fail_test(${name}): unknown arguments ${arg_UNPARSED_ARGUMENTS}")
  endif()
  set(libs kvtier::core ${arg_LIBS})
  if(arg_SOURCE MATCHES "\\.cu$")
    if(NOT KVTIER_HAS_CUDA)
      message(STATUS "kvtier: ${name} not built (no CUDA compiler)")
      return()
    endif()
    list(APPEND libs kvtier::cuda)
  endif()
  string(REPLACE "." "_" target "compile_fail_${name}")

  add_library(${target} OBJECT EXCLUDE_FROM_ALL ${arg_SOURCE})
  target_link_libraries(${target} PRIVATE ${libs})
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${target} PRIVATE KVTIER_COMPILE_FAIL=1)
  if(arg_CONTROL)
    add_library(${target}_control OBJECT ${arg_SOURCE})
    target_link_libraries(${target}_control PRIVATE ${libs})
    target_include_directories(${target}_control PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  endif()

  add_test(NAME ${name}
    COMMAND ${CMAKE_COMMAND}
      -DBUILD_DIR=${CMAKE_BINARY_DIR}
      -DTARGET=${target}
      -DCONFIG=$<CONFIG>
      -DREGEX=${arg_REGEX}
      -P ${KVTIER_COMPILE_FAIL_SCRIPT})
  set_tests_properties(${name} PROPERTIES
    LABELS compile-fail
    RESOURCE_LOCK kvtier_build_tree
    TIMEOUT 300)
endfunction()
