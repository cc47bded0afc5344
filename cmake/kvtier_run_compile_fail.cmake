# Runs one compile-fail check (see kvtier_add_compile_fail_test.cmake):
#   cmake -DBUILD_DIR=<tree> -DTARGET=<object library> [-DCONFIG=<cfg>] [-DREGEX=<re>] -P this-file
# Succeeds only when building TARGET fails and, with REGEX, the diagnostic matches it.
foreach(v BUILD_DIR TARGET)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "kvtier_run_compile_fail.cmake: ${v} is not set")
  endif()
endforeach()
set(config_args)
if(CONFIG)
  set(config_args --config ${CONFIG})
endif()

execute_process(
  COMMAND ${CMAKE_COMMAND} -E env LC_ALL=C LANG=C
          ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET} ${config_args}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)

if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must not:\n${out}")
endif()

# Keep the compiler's diagnostic only: drop Ninja's progress lines and the echoed command line,
# which names the source file and could match REGEX by accident.
set(diag "${out}")
string(REGEX REPLACE "FAILED: [^\n]*\n[^\n]*\n" "" diag "${diag}")
string(REGEX REPLACE "\\[[0-9]+/[0-9]+\\][^\n]*\n" "" diag "${diag}")

if(NOT "${REGEX}" STREQUAL "")
  if(NOT diag MATCHES "${REGEX}")
    message(FATAL_ERROR "${TARGET} failed to compile, but without the expected diagnostic\n"
                        "expected (regex): ${REGEX}\ncompiler said:\n${diag}")
  endif()
  message(STATUS "${TARGET} failed to compile as required; diagnostic matched: ${CMAKE_MATCH_0}")
else()
  message(STATUS "${TARGET} failed to compile as required")
endif()
