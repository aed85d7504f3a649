# workbench_add_plugin(<name> SOURCES <src>... [LINK_LIBRARIES <lib>...])
#
# Builds one workbench plugin as a MODULE library named <name>.so (no "lib" prefix) in the plugin
# directory. The built-in plugins use this function, and so do out-of-tree plugins through the installed
# CMake package. A plugin links libworkbench_core and LibTorch (shared: a static libtorch in a plugin
# would put two copies of its globals in one process) and nothing else of the workbench.
function(workbench_add_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LINK_LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "workbench_add_plugin(${name}): SOURCES is required")
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  if(TARGET workbench::core)
    target_link_libraries(${name} PRIVATE workbench::core ${ARG_LINK_LIBRARIES})
  else()
    target_link_libraries(${name} PRIVATE workbench_core ${ARG_LINK_LIBRARIES})
  endif()
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "${name}"
    LIBRARY_OUTPUT_DIRECTORY "${WORKBENCH_PLUGIN_OUTPUT_DIR}")
  if(TARGET workbench_plugins)
    add_dependencies(workbench_plugins ${name})
  endif()
endfunction()
