"""The command line: ``python -m lowprec {formats,demo,figures,gpu-check,lab}``."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from .demo import make_figures, run_demo
from .formats import FORMATS, FloatFormat
from .gpu import gpu_status
from .gpu.check import format_report, run_gpu_check
from .lab import build as build_lab


def _specials_text(fmt: FloatFormat) -> str:
    e, m = fmt.exponent_bits, fmt.mantissa_bits
    ones = "1" * e if e <= 5 else f"1x{e}"
    zeros = "0" * m if m <= 3 else f"0x{m}"
    parts = []
    if fmt.has_inf:
        parts.append(f"inf S.{ones}.{zeros}")
    if fmt.specials == "ieee":
        parts.append(f"NaN S.{ones}.(nonzero)")
    elif fmt.specials == "fn":
        # all ones
        parts.append(f"NaN {'S.' if fmt.signed else ''}{ones}{'.' + '1' * m if m else ''}")
    elif fmt.specials == "fnuz":
        parts.append("NaN 0x80 (the -0 code)")
    else:
        parts.append("no inf, no NaN")
    if fmt.has_negative_zero:
        parts.append("-0")
    elif fmt.has_zero and fmt.signed:
        parts.append("no -0")
    if not fmt.has_zero:
        parts.append("no zero")
    return ", ".join(parts)


def format_table(formats: Iterable[FloatFormat] | None = None) -> str:
    """The table that ``python -m lowprec formats`` prints (every format of FORMATS by default)."""
    formats = FORMATS.values() if formats is None else formats
    header = ("name", "bits", "E", "M", "bias", "max", "tiny (min normal)",
              "min subnormal", "eps", "overflow", "specials")
    rows = [header]
    for f in formats:
        rows.append((f.name, str(f.bits), str(f.exponent_bits), str(f.mantissa_bits), str(f.bias),
                     f"{f.max:.6g}", f"{f.tiny:.6g}",
                     f"{f.smallest_subnormal:.6g}" if f.has_zero else "(none)",
                     f"{f.eps:.6g}", f.default_overflow, _specials_text(f)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lowprec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("formats", help="print every preset format and its limits")
    demo = sub.add_parser("demo", help="train under six precision policies, compare, write figures")
    demo.add_argument("--out", default=None, help="figure folder (default: ./figures)")
    figs = sub.add_parser("figures", help="write every figure (seeded) to --out")
    figs.add_argument("--out", default=None, help="figure folder (default: ./figures)")
    gpu = sub.add_parser("gpu-check", help="compare real tensor cores (CuPy) with the simulator")
    gpu.add_argument("--out", default="gpu-check.json", help="where to write the JSON report")
    gpu.add_argument("--random-tiles", type=int, default=64, help="random tiles per probe")
    gpu.add_argument("--mlp-steps", type=int, default=10, help="lock-step MLP steps to compare")
    lab = sub.add_parser("lab", help="the lab kit: `lab build` writes the student notebooks")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    build = lab_sub.add_parser("build", help="student notebooks, answers and outputs removed")
    build.add_argument("--out", required=True, help="folder for the student notebooks")
    build.add_argument("--notebooks", default=None,
                       help="the solution notebooks (default: the checkout's notebooks/)")
    build.add_argument("--source", default="",
                       help="pip requirement the setup cell installs where lowprec is missing, "
                       "e.g. git+https://host/course/lowprec (default: none; the cell asks)")
    args = parser.parse_args(argv)
    if args.command == "formats":
        print(format_table())
    elif args.command == "demo":
        run_demo(args.out)
    elif args.command == "figures":
        for path in make_figures(args.out):
            print(path)
    elif args.command == "gpu-check":
        return _gpu_check(args)
    elif args.command == "lab":
        for path in build_lab(args.out, args.notebooks, args.source):
            print(path)
    return 0


def _gpu_check(args) -> int:
    usable, reason = gpu_status()
    if not usable:
        print(f"gpu-check needs a CUDA GPU and CuPy: {reason}", file=sys.stderr)
        return 1
    print(f"device: {reason}", flush=True)
    report = run_gpu_check(args.out, random_tiles=args.random_tiles, mlp_steps=args.mlp_steps)
    print(format_report(report))
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
