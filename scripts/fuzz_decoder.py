"""Fuzz the native otlp_proto decoder against the Python one, for a while (by hand).

    .venv/bin/python scripts/fuzz_decoder.py --seconds 600 [--seed N]

Prints progress every 10,000 inputs and, at the end, the figures and every difference found
(the input's hex and both outcomes).  Exits 1 when the two decoders ever disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import decoder_fuzz


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    report = decoder_fuzz.run(args.seed, seconds=args.seconds, progress=lambda r: print(r.line(), flush=True))
    print(report.line())
    for d in report.differences:
        print(d, end="\n---\n")
    return 1 if report.differences or report.panics else 0


if __name__ == "__main__":
    sys.exit(main())
