// Test fixture: an ordinary shared library that exports a C function but none of the workbench plugin
// symbols (no WORKBENCH_PLUGIN). The registry must refuse it by name instead of crashing.
extern "C" __attribute__((visibility("default"))) int wbtest_not_a_plugin_answer() { return 42; }
