"""Break, run, see red (issue 21, item 3): each of the five breakages of ``scripts/breakages.py`` applied
in turn, the tests that guard it run, and which of them fail.

    python scripts/break_run_red.py [--only NAME ...] [--md FILE]

A breakage passes this check when at least one of its tests fails. Runs the toy-world quality tests once
per quality breakage (a few minutes each on 2 CPU cores); the suite itself runs them unbroken.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUALITY = "tests/test_toy_quality.py"
QUALITY_K = "miou or separates or filter_s or boundaries"  # the four tests on the shared toy measurement

#: breakage -> the tests that guard it (quality tests on held-out toy clips first, then unit tests)
GUARDS: dict[str, list[str]] = {
    "kmeans_shuffled": [QUALITY, "tests/test_context.py"],
    "cbr_identity": ["tests/test_refine.py", "tests/test_pinned.py", QUALITY],
    "lambda0": [QUALITY, "tests/test_modulation.py"],
    "s_ignored": [QUALITY, "tests/test_modulation.py"],
    "names_order": ["tests/test_names.py", "tests/test_names_pipeline.py"],
}


def run(name: str, tests: list[str]) -> tuple[int, list[str], float]:
    """pytest with breakage ``name`` on ``tests``: (exit code, failed test ids, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "breakages", "--vidseg-break", name, "-q", "-rf",
           "-p", "no:cacheprovider", *tests]  # fmt: skip
    path = [str(ROOT / "scripts"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", out.stdout, flags=re.M)
    return out.returncode, failed, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(GUARDS), help="these breakages only")
    ap.add_argument("--md", type=Path, help="write the table as markdown to this file too")
    args = ap.parse_args(argv)
    rows = []
    ok = True
    for name in args.only or list(GUARDS):
        tests = GUARDS[name]
        if QUALITY in tests:  # the quality file once, restricted to its four measurement tests
            code_q, failed_q, dt_q = run(name, [QUALITY, "-k", QUALITY_K])
            rest = [t for t in tests if t != QUALITY]
            code_r, failed_r, dt_r = run(name, rest) if rest else (0, [], 0.0)
            failed, dt, codes = failed_q + failed_r, dt_q + dt_r, (code_q, code_r)
        else:
            code, failed, dt = run(name, tests)
            codes = (code,)
        red = bool(failed) or any(c not in (0, 5) for c in codes)
        ok &= red
        rows.append((name, red, failed, dt))
        print(
            f"{name}: {'RED' if red else 'still green'} in {dt:.0f} s; failed: {', '.join(failed) or '-'}",
            flush=True,
        )
    md = ["| breakage | red? | failing tests | seconds |", "|---|---|---|---|"]
    md += [f"| {n} | {'yes' if r else '**no**'} | {'<br>'.join(f) or '-'} | {d:.0f} |" for n, r, f, d in rows]
    text = "\n".join(md)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
