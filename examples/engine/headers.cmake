# kvtier_engine::headers: the engine's headers (namespace kvtier_engine) as one INTERFACE target,
# included by examples/engine and tests/engine, whichever CMake reads first.
if(NOT TARGET kvtier_engine_headers)
  add_library(kvtier_engine_headers INTERFACE)
  add_library(kvtier_engine::headers ALIAS kvtier_engine_headers)
  target_include_directories(kvtier_engine_headers INTERFACE ${CMAKE_CURRENT_LIST_DIR}/include)
  target_link_libraries(kvtier_engine_headers INTERFACE kvtier::core)
  # The model files shipped in the tree (models/stories260K: the checkpoint and its tokenizer).
  target_compile_definitions(kvtier_engine_headers INTERFACE KVTIER_ENGINE_MODELS_DIR="${PROJECT_SOURCE_DIR}/models")
endif()
