# Precompiled LibTorch headers.
#
# Nearly every translation unit here includes LibTorch's headers, and parsing them costs about 12 s per
# file on a 2-core machine: more than half of the whole build. They are compiled once per kind of object
# and reused by every target of that kind (target_precompile_headers REUSE_FROM). GCC refuses a header
# precompiled with -fPIC in a -fPIE compile (and the reverse), or at another -O, so there are three
# holders: workbench_pch_pic for plugins, workbench_pch_pie for executables, and tests/ has its own (its
# files compile without optimisation).
#
# A holder links what the reusing targets link (LibTorch, fmt, OpenMP), so that the flags that shape the
# headers (-fopenmp, hence _OPENMP in ATen/Parallel.h; -D_GLIBCXX_USE_CXX11_ABI) are the same. A target
# built without them must not reuse a holder; a mismatch that slips through is reported by -Winvalid-pch
# and then costs only time (GCC reads the headers as text).
#
# Out-of-tree plugins built with workbench_add_plugin see no holder and build as before.
option(WORKBENCH_PCH "precompile LibTorch's headers once and reuse them in every target" ON)

set(WORKBENCH_PCH_HEADERS
  <torch/types.h> <torch/utils.h> <torch/arg.h>
  <torch/nn/module.h> <torch/nn/pimpl.h> <torch/nn/modules/linear.h> <torch/nn/modules/embedding.h>
  <torch/nn/modules/normalization.h> <torch/nn/functional/loss.h> <torch/nn/functional/dropout.h>
  <torch/nn/functional/normalization.h> <torch/optim/adam.h> <torch/serialize/input-archive.h>
  <ATen/Parallel.h> <fmt/format.h>
  <algorithm> <cstdint> <filesystem> <map> <memory> <optional> <sstream> <string> <vector>)

# workbench_pch_holder(<name> PIC|PIE [OPTIONS <compile option>...]): a holder, built only as what others
# reuse. A target that reuses it must be of its kind and compile with the same OPTIONS.
function(workbench_pch_holder name kind)
  cmake_parse_arguments(ARG "" "" "OPTIONS" ${ARGN})
  if(NOT WORKBENCH_PCH)
    return()
  endif()
  set(dir ${CMAKE_BINARY_DIR}/pch)
  if(kind STREQUAL "PIC")
    file(WRITE ${dir}/${name}.cpp "// A precompiled headers' holder: nothing to compile.\n")
    add_library(${name} OBJECT ${dir}/${name}.cpp)
  else()
    file(WRITE ${dir}/${name}.cpp "int main() { return 0; }\n")
    add_executable(${name} ${dir}/${name}.cpp)
    set_target_properties(${name} PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
  target_link_libraries(${name} PRIVATE ${TORCH_LIBRARIES} fmt::fmt OpenMP::OpenMP_CXX)
  target_compile_options(${name} PRIVATE ${ARG_OPTIONS})
  target_precompile_headers(${name} PRIVATE ${WORKBENCH_PCH_HEADERS})
endfunction()

# workbench_reuse_pch(<holder> <target>...): the targets' files start from the holder's headers.
function(workbench_reuse_pch holder)
  if(NOT TARGET ${holder})
    return()
  endif()
  foreach(target ${ARGN})
    target_precompile_headers(${target} REUSE_FROM ${holder})
  endforeach()
endfunction()

# Plugins (and their object libraries) and the executables. Not the core: its files include few of
# LibTorch's headers each, and reading the whole precompiled set cost them more than it saved.
workbench_pch_holder(workbench_pch_pic PIC)
workbench_pch_holder(workbench_pch_pie PIE)
