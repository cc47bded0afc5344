# kvtier_engine::headers: the engine's headers (namespace kvtier_engine) as one INTERFACE target,
# included by examples/engine and tests/engine, whichever CMake reads first.
if(NOT TARGET kvtier_engine_headers)
  find_package(Threads REQUIRED)
  add_library(kvtier_engine_headers INTERFACE)
  add_library(kvtier_engine::headers ALIAS kvtier_engine_headers)
  target_include_directories(kvtier_engine_headers INTERFACE ${CMAKE_CURRENT_LIST_DIR}/include)
  target_link_libraries(kvtier_engine_headers INTERFACE kvtier::core Threads::Threads)
  # The CPU backend's exactness contract: no FMA contraction one code path could get and another not.
  target_compile_options(kvtier_engine_headers INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>
                         # kernels.hpp's 32-byte vectors stay inside one translation unit: no ABI to keep
                         $<$<COMPILE_LANGUAGE:CXX>:-Wno-psabi>)
  # The model files shipped in the tree (models/stories260K: the checkpoint and its tokenizer).
  target_compile_definitions(kvtier_engine_headers INTERFACE KVTIER_ENGINE_MODELS_DIR="${PROJECT_SOURCE_DIR}/models")
endif()
