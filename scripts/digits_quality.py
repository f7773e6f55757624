"""Train each `*-digits` recipe with its defaults and report sample readability beside the real digits.

    python scripts/digits_quality.py [--out runs/digits-quality] [RECIPE ...]

For every recipe: `coop train RECIPE --out OUT/RECIPE --resume` (so an interrupted report
continues), then `coop eval OUT/RECIPE --metric digit_score` on the samples a person sees in the
final grid (`revised` for the descriptor-based methods, `generator` otherwise).  Prints one
Markdown table: training time, the classifier's mean top-class probability, the share of
confidently classified samples, classes covered and the class entropy, with the real test
digits' figures in the last row.  The score is a report, not a training target.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# The samples each method's final grid shows.
SAMPLES = {"coopnets-digits": "revised", "multigrid-digits": "revised", "triangle-digits": "generator",
           "coopinit-digits": "generator"}


def coop(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("coop")
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"coop {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=list(SAMPLES))
    parser.add_argument("--out", type=Path, default=Path("runs/digits-quality"))
    args = parser.parse_args()
    rows = []
    real = None
    for recipe in args.recipes:
        run = args.out / recipe
        start = time.perf_counter()
        coop("train", recipe, "--out", str(run), "--resume", "--no-progress")
        seconds = time.perf_counter() - start
        source = SAMPLES.get(recipe, "revised")
        rec = json.loads(coop("eval", str(run), "--metric", "digit_score", "--set", f"samples={source}", "--json").stdout)
        d = rec["details"]
        rows.append((recipe, source, seconds, d))
        real = d["real_test_digits"], d["classifier_test_accuracy"]
        print(f"{recipe}: done in {seconds:.0f} s", file=sys.stderr)
    print("| recipe | samples | train s | mean confidence | confident (>= 0.9) | classes | class entropy (bits) |")
    print("|---|---|---|---|---|---|---|")
    for recipe, source, seconds, d in rows:
        print(f"| {recipe} | {source} | {seconds:.0f} | {d['mean_confidence']:.3f} | {d['confident_fraction']:.3f} "
              f"| {d['classes_covered']} | {d['class_entropy_bits']:.2f} |")
    if real is not None:
        r, acc = real
        print(f"| real test digits (classifier accuracy {acc:.3f}) | | | {r['mean_confidence']:.3f} "
              f"| {r['confident_fraction']:.3f} | {r['classes_covered']} | {r['class_entropy_bits']:.2f} |")


if __name__ == "__main__":
    main()
