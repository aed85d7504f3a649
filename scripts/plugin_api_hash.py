#!/usr/bin/env python3
"""Prints the sha256 of the plugin contract headers exactly as tests/test_plugin_api.cpp computes it
(core/include/workbench/*.h, sorted; // comments removed; whitespace runs collapsed to one space; each
file as "<name>\\n<text>\\n"). For the new line of core/plugin_api.txt after a kPluginApiVersion bump."""
import hashlib, pathlib, re, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
text = ""
for h in sorted((root / "core/include/workbench").glob("*.h")):
    t = re.sub(r"//[^\n]*", "", h.read_text())
    t = re.sub(r"[ \t\r\n]+", " ", t)
    text += h.name + "\n" + t + "\n"
print(hashlib.sha256(text.encode()).hexdigest())
