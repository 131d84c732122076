#!/usr/bin/env python3
"""Top functions of a callgrind dump, per message (stdlib only).

Usage: python3 bench/callgrind_top.py DUMP [--events N] [--top 10] [--hide-above 90]

DUMP is a callgrind output file written with --compress-strings=no (as `--callgrind` of the
bench writes them); `{side}-{scenario}-r{round}.{pid}.out.2` covers one measurement window.
N is the number of messages (or round trips) in that window, from the bench's JSON
(`details.runs[i].window.events`): costs are then shown per message.

callgrind_annotate lists a function once per source file its inlined code came from, which
splits one function into many lines. This script reads the same dump and merges them:

- exclusive (self) cost: the function's own instructions, inlined code included;
- inclusive cost: self plus everything it called (calls to itself are not added again).

Frames above --hide-above percent inclusive (the runtime's worker loop and task harness,
which contain everything) are left out of the inclusive list.
"""

import argparse
import re
import sys
from collections import defaultdict

# `fn=name`, `cfn=name`; with compressed strings `fn=(12) name` or `fn=(12)`.
NAME = re.compile(r"^(?:\((\d+)\))?\s*(.*)$")


def parse(path):
    """Returns (total, self_cost, inclusive) dictionaries keyed by function name."""
    self_cost = defaultdict(int)
    called = defaultdict(int)
    names = {}
    function = None
    callee = None
    after_calls = False
    total = None

    def name_of(text):
        match = NAME.match(text)
        ident, name = match.group(1), match.group(2)
        if ident is not None:
            if name:
                names[ident] = name
            return names.get(ident, f"({ident})")
        return name

    with open(path, encoding="utf-8", errors="replace") as dump:
        for line in dump:
            line = line.rstrip("\n")
            if not line:
                continue
            head = line[0]
            if head.isdigit() or head in "+-*":
                fields = line.split()
                cost = int(fields[1]) if len(fields) > 1 else 0
                if after_calls:
                    if callee != function:
                        called[function] += cost
                    after_calls = False
                else:
                    self_cost[function] += cost
                continue
            if line.startswith("fn="):
                function = name_of(line[3:])
            elif line.startswith("cfn="):
                callee = name_of(line[4:])
            elif line.startswith("calls="):
                after_calls = True
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
    inclusive = {f: self_cost.get(f, 0) + called.get(f, 0) for f in set(self_cost) | set(called)}
    if total is None:
        total = sum(self_cost.values())
    return total, self_cost, inclusive


def short(name, width=110):
    return name if len(name) <= width else name[: width - 1] + "…"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dump")
    parser.add_argument("--events", type=float, default=None, help="messages in the window")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--hide-above", type=float, default=90.0)
    args = parser.parse_args(argv[1:])
    total, self_cost, inclusive = parse(args.dump)
    per = args.events or 1.0
    unit = "Ir/msg" if args.events else "Ir"
    print(f"total: {total:,} Ir" + (f" = {total / per:,.0f} {unit}" if args.events else ""))
    print(f"\ninclusive (hiding frames above {args.hide_above:.0f} %):")
    shown = [
        (cost, name)
        for name, cost in inclusive.items()
        if cost * 100 / total <= args.hide_above
    ]
    for cost, name in sorted(shown, reverse=True)[: args.top]:
        print(f"{cost / per:>12,.0f} {unit} {cost * 100 / total:5.1f} %  {short(name)}")
    print("\nexclusive (self):")
    for name, cost in sorted(self_cost.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{cost / per:>12,.0f} {unit} {cost * 100 / total:5.1f} %  {short(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
