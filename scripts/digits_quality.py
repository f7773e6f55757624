"""Train each `*-digits` recipe with its defaults and report sample readability beside the real digits.

    python scripts/digits_quality.py [--out runs/digits-quality] [--set KEY=VALUE ...] [RECIPE ...]

For every recipe: `coop train RECIPE --out OUT/RECIPE --resume` (so an interrupted report
continues), then `coop eval OUT/RECIPE --metric digit_score` on the samples a person sees in the
final grid (`revised` for the descriptor-based methods, `generator` otherwise).  Prints one
Markdown table: training time, the classifier's mean top-class probability, the share of
confidently classified samples, classes covered and the class entropy, with the real test
digits' figures in the last row, and the machine's load average at the start and end (other
work on a shared CPU inflates the times).  `--set` overrides go to every `coop train` (e.g.
`--set run.iterations=300` for a quick look); the figures of the recipes' defaults are those
without it.  The score is a report, not a training target.
"""
from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every training (repeatable)")
    args = parser.parse_args()
    sets = [a for kv in args.overrides for a in ("--set", kv)]
    rows = []
    real = None
    for recipe in args.recipes:
        name = Path(recipe).stem  # a recipe name, or a .toml file being tried
        run = args.out / name
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        coop("train", recipe, "--out", str(run), "--resume", "--no-progress", *sets)
        seconds = time.perf_counter() - start
        load = (load_before, os.getloadavg()[0])
        source = SAMPLES.get(name, "revised")
        rec = json.loads(coop("eval", str(run), "--metric", "digit_score", "--set", f"samples={source}", "--json").stdout)
        d = rec["details"]
        rows.append((name, source, seconds, load, d))
        real = d["real_test_digits"], d["classifier_test_accuracy"]
        print(f"{name}: done in {seconds:.0f} s", file=sys.stderr)
    print("| recipe | samples | train s (load avg start-end) | mean confidence | confident (>= 0.9) | classes "
          "| class entropy (bits) |")
    print("|---|---|---|---|---|---|---|")
    for recipe, source, seconds, load, d in rows:
        print(f"| {recipe} | {source} | {seconds:.0f} ({load[0]:.1f}-{load[1]:.1f}) | {d['mean_confidence']:.3f} "
              f"| {d['confident_fraction']:.3f} | {d['classes_covered']} | {d['class_entropy_bits']:.2f} |")
    if real is not None:
        r, acc = real
        print(f"| real test digits (classifier accuracy {acc:.3f}) | | | {r['mean_confidence']:.3f} "
              f"| {r['confident_fraction']:.3f} | {r['classes_covered']} | {r['class_entropy_bits']:.2f} |")


if __name__ == "__main__":
    main()
