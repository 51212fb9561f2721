"""``lnbench list``: the registered implementations and whether they run here."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lnbench.cli.common import EXIT_OK, console, load_plugins


def configure(sub: Any) -> None:
    p = sub.add_parser("list", help="implementations and their availability here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plugin", action="append", metavar="FILE.py")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lnbench.registry import registry

    load_plugins(args.plugin)
    rows = [impl.describe() for impl in registry().values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.table import Table

    t = Table(title="lnbench implementations")
    for col in ("name", "kind", "array", "device", "dtypes", "affine", "saved", "available"):
        t.add_column(col, no_wrap=col in ("name", "dtypes"))
    for r in rows:
        avail = "[green]yes[/]" if r["available"] else f"[yellow]no[/]: {r['reason']}"
        t.add_row(r["name"], r["kind"], r["array"], r["device"], ",".join(r["dtypes"]),
                  "yes" if r["affine"] else "no", r["saved"], avail)
    console().print(t)
    return EXIT_OK
