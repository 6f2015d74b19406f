"""``python -m kaelab.report DIR``: render the report page of a run dir or a sweep dir again
(``DIR/report.html``) and print its path. Exit 0 done, 2 for a DIR that is neither (one line)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kaelab.errors import KaelabError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kaelab.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="a run dir (with metrics.json) or a sweep dir")
    args = ap.parse_args(argv)
    from kaelab.report import write_report

    try:
        path = write_report(args.dir)
    except KaelabError as err:
        print(f"kaelab.report: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
