#!/usr/bin/python3
"""Sums a Chrome trace from `bench_conformer_step --profile FILE` by op: self time per step, calls, share.

    ./build/bin/bench_conformer_step --profile /tmp/ours.json --no-peer --steps 3
    bench/profile_summary.py /tmp/ours.json --steps 3

Self time is an op's duration less the durations of the ops nested inside it on the same thread.
"""
import argparse
import collections
import json


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--steps", type=int, default=1, help="the timed steps in the trace, to print ms per step")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    with open(a.trace) as f:
        events = [e for e in json.load(f) if e.get("ph") == "X"]
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e.get("tid")].append(e)
    self_us = collections.Counter()
    calls = collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # (end, name)
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                stack.pop()
            if stack:
                self_us[stack[-1][1]] -= e["dur"]
            self_us[e["name"]] += e["dur"]
            calls[e["name"]] += 1
            stack.append((e["ts"] + e["dur"], e["name"]))
    total = sum(self_us.values())
    print(f"{'op':<48} {'ms/step':>9} {'share':>7} {'calls/step':>10}")
    for name, us in self_us.most_common(a.top):
        print(f"{name[:48]:<48} {us / 1e3 / a.steps:9.1f} {100 * us / total:6.1f}% {calls[name] / a.steps:10.1f}")
    print(f"{'total (all threads)':<48} {total / 1e3 / a.steps:9.1f}")


if __name__ == "__main__":
    main()
