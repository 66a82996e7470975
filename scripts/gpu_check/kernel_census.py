#!/usr/bin/env python3
"""Counts the kernels in a cubecl profiling log (CUBECL_DEBUG_OPTION=profile), segment by
segment: cubecl closes a segment at each device sync, and `bench train --phases` syncs after
the forward pass, the backward pass and the update, so each training step shows as three.

    kernel_census.py LOG [TOP]

Prints, per segment, the number of kernels, their summed GPU time and the TOP (default 25)
kernel names by count."""
import re
import sys
from collections import defaultdict

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(text):
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def segments(lines):
    current = []
    for line in lines:
        if line.startswith("| Name"):
            if current:
                yield current
            current = []
            continue
        # a kernel line is `| <duration> | <name>` (names may hold ` | ` themselves); a
        # summary table's rows start with a name
        m = re.match(r"^\| (\S+)\s*\| (.+)$", line.rstrip("\n"))
        if not m:
            continue
        t = seconds(m.group(1))
        if t is not None:
            current.append((m.group(2).strip(), t))
    if current:
        yield current


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    for i, seg in enumerate(segments(lines)):
        total = sum(t for _, t in seg)
        print(f"== segment {i}: {len(seg)} kernels, {total * 1e3:.2f} ms of GPU time")
        by_name = defaultdict(lambda: [0, 0.0])
        for name, t in seg:
            key = name[:110]
            by_name[key][0] += 1
            by_name[key][1] += t
        for name, (n, t) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
            print(f"  {n:6d} {t * 1e3:9.3f} ms  {name}")


if __name__ == "__main__":
    main()
