#!/usr/bin/env python3
"""Runs criterion benches several times and prints, for each case, the range (min-max) of
the median estimates over the runs, as a Markdown table: the figures the READMEs quote.

    python3 benches/ranges.py --runs 3 timeout stack -- --warm-up-time 0.5 --measurement-time 1

Each name is a bench of `staunch-benches`; what follows `--` goes to criterion. The table
lists every case in the order criterion ran it (`group/case`), in nanoseconds per call.
"""
import re
import subprocess
import sys

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
RESULT = re.compile(r"^(\S[^\n]*?)\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", re.M)


def run(bench, extra):
    cmd = ["cargo", "bench", "-q", "-p", "staunch-benches", "--bench", bench, "--"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [(m.group(1).strip(), float(m.group(4)) * UNITS[m.group(5)]) for m in RESULT.finditer(out)]


def fmt(ns):
    return f"{ns:.0f}" if ns >= 100 else f"{ns:.1f}" if ns >= 10 else f"{ns:.2f}"


def main():
    args = sys.argv[1:]
    extra = args[args.index("--") + 1:] if "--" in args else []
    args = args[: args.index("--")] if "--" in args else args
    runs = 3
    if args[:1] == ["--runs"]:
        runs, args = int(args[1]), args[2:]
    for bench in args:
        figures = {}
        for _ in range(runs):
            for case, ns in run(bench, extra):
                figures.setdefault(case, []).append(ns)
        print(f"\n`{bench}`, ns per call, range of {runs} runs\n")
        print("| case | ns |\n|---|---|")
        for case, values in figures.items():
            lo, hi = min(values), max(values)
            print(f"| {case} | {fmt(lo)}–{fmt(hi)} |" if fmt(lo) != fmt(hi) else f"| {case} | {fmt(lo)} |")


if __name__ == "__main__":
    main()
