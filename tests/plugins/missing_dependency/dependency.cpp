// A tiny shared library that the missing_dependency plugin links; at run time it is not on the
// loader's path, so dlopen of the plugin fails with the library's name.
extern "C" int wbtest_dependency_value() { return 42; }
