"""The command line both parity scripts share: check every case file, print each case's worst
relative error, and exit 0 when all agree, 1 on a mismatch, 2 on a malformed file."""

import argparse
import sys


def main(script, doc, run_case):
    """`run_case(path, tol) -> (ok, name, worst)` checks one case file."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--tol", type=float, default=1e-9, help="max relative error (default 1e-9, for f64)")
    args = ap.parse_args()
    failed, summary = [], []
    for path in args.files:
        try:
            ok, name, worst = run_case(path, args.tol)
        except (ValueError, KeyError, AssertionError) as e:
            print(f"{script}: malformed case file {path}: {e!r}", file=sys.stderr)
            sys.exit(2)
        summary.append((name, worst))
        if not ok:
            failed.append(name)
    print("\nsummary (max relative error per case):")
    for name, worst in summary:
        print(f"   {worst:9.2e}  {name}")
    if failed:
        print(
            f"\nPARITY FAILURE: {len(failed)} of {len(summary)} cases disagree with the JAX reference "
            f"beyond {args.tol:.0e}: {', '.join(failed)}",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"\nall {len(summary)} cases agree with the JAX reference within {args.tol:.0e}")
