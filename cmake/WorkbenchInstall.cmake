# `cmake --install build --prefix P` installs the SDK: public headers, libworkbench_core (and the
# registry and run-store libraries the executable needs), the built-in plugins, the `workbench`
# executable, the canned queries, and a CMake package so that an out-of-tree project can write
#   find_package(workbench REQUIRED)
#   workbench_add_plugin(my_loss SOURCES my_loss.cpp)
# The layout is fixed (bin/, lib/, lib/workbench/plugins/, include/) because the executable finds its
# plugins relative to itself: <prefix>/bin/workbench -> <prefix>/lib/workbench/plugins.
include(CMakePackageConfigHelpers)

set(WORKBENCH_INSTALL_CMAKEDIR lib/cmake/workbench)
set(WORKBENCH_INSTALL_PLUGINDIR lib/workbench/plugins)

# Installed binaries find libworkbench_* next to them and LibTorch where it was at build time
# (a -DTorch_DIR LibTorch is not on the system path).
set_target_properties(workbench PROPERTIES INSTALL_RPATH "$ORIGIN/../lib"
                                           INSTALL_RPATH_USE_LINK_PATH ON)
foreach(lib workbench_core workbench_registry workbench_results)
  set_target_properties(${lib} PROPERTIES INSTALL_RPATH "$ORIGIN" INSTALL_RPATH_USE_LINK_PATH ON)
endforeach()

install(TARGETS workbench_core EXPORT workbenchTargets
  LIBRARY DESTINATION lib
  INCLUDES DESTINATION include)
install(TARGETS workbench_registry LIBRARY DESTINATION lib)
install(TARGETS workbench RUNTIME DESTINATION bin)
# Only the SDK: the headers a plugin author needs. The engine (core/internal, the registry, the run
# store) stays private, so that it can change without breaking a built plugin.
install(DIRECTORY core/include/workbench DESTINATION include)

get_property(builtin_plugins TARGET workbench_plugins PROPERTY WORKBENCH_BUILTIN_PLUGINS)
foreach(plugin ${builtin_plugins})
  set_target_properties(${plugin} PROPERTIES INSTALL_RPATH "$ORIGIN/../.." INSTALL_RPATH_USE_LINK_PATH ON)
  install(TARGETS ${plugin} LIBRARY DESTINATION ${WORKBENCH_INSTALL_PLUGINDIR})
endforeach()

install(EXPORT workbenchTargets NAMESPACE workbench:: DESTINATION ${WORKBENCH_INSTALL_CMAKEDIR})
configure_package_config_file(cmake/workbenchConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/workbenchConfig.cmake
  INSTALL_DESTINATION ${WORKBENCH_INSTALL_CMAKEDIR}
  PATH_VARS WORKBENCH_INSTALL_PLUGINDIR)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/workbenchConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/workbenchConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/workbenchConfigVersion.cmake
  cmake/WorkbenchPlugin.cmake
  DESTINATION ${WORKBENCH_INSTALL_CMAKEDIR})
