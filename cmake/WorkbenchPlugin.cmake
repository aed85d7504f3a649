# workbench_add_plugin(<name> SOURCES <src>... [LINK_LIBRARIES <lib>...] [OUTPUT_DIRECTORY <dir>])
#
# Builds one workbench plugin as a MODULE library named <name>.so (no "lib" prefix). The built-in
# plugins use this function, and so do out-of-tree plugins. A plugin links libworkbench_core and LibTorch
# (shared: a static libtorch in a plugin would put two copies of its globals in one process) and nothing
# else of the workbench.
#
# Without OUTPUT_DIRECTORY the library goes to the built-in plugin directory (inside the workbench's own
# build) or to the current binary directory (out of tree), and is part of the `workbench_plugins`
# target. With it, the plugin is written there and built on its own (tests use this for plugins that
# must never land where `workbench` looks).
function(workbench_add_plugin name)
  cmake_parse_arguments(ARG "" "OUTPUT_DIRECTORY" "SOURCES;LINK_LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "workbench_add_plugin(${name}): SOURCES is required")
  endif()
  if(ARG_OUTPUT_DIRECTORY)
    set(out ${ARG_OUTPUT_DIRECTORY})
  elseif(WORKBENCH_PLUGIN_OUTPUT_DIR)
    set(out ${WORKBENCH_PLUGIN_OUTPUT_DIR})
  else()
    set(out ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  if(NOT TARGET workbench::core)
    message(FATAL_ERROR "workbench_add_plugin(${name}): no workbench::core target; call find_package(workbench) first")
  endif()
  target_link_libraries(${name} PRIVATE workbench::core ${ARG_LINK_LIBRARIES})
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "${name}"
    LIBRARY_OUTPUT_DIRECTORY "${out}")
  # Inside the workbench's own build, the plugin reuses the precompiled LibTorch headers.
  if(COMMAND workbench_reuse_pch)
    workbench_reuse_pch(workbench_pch_pic ${name})
  endif()
  if(NOT ARG_OUTPUT_DIRECTORY AND TARGET workbench_plugins)
    add_dependencies(workbench_plugins ${name})
    set_property(TARGET workbench_plugins APPEND PROPERTY WORKBENCH_BUILTIN_PLUGINS ${name})
  endif()
endfunction()
