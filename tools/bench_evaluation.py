"""Time dipy_ext.metrics.evaluate_synthesis on 100 vs 100 volumes at 64^3.

Two phantom sets (different seeds, both families) stand in for real and
synthetic volumes. Prints the wall time of each part of the report and a
few of its numbers.

    python tools/bench_evaluation.py            # 100 vs 100 at 64^3
    python tools/bench_evaluation.py --n 20     # quicker
"""

import argparse
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--shape", type=int, default=64)
    p.add_argument("--max-pairs", type=int, default=100)
    args = p.parse_args(argv)

    from dipy_ext.data import phantom_cohort
    from dipy_ext.metrics import evaluate_synthesis

    shape = (args.shape,) * 3
    families = np.tile([0.0, 1.0], args.n // 2 + 1)[: args.n]
    t0 = time.perf_counter()
    real = phantom_cohort(args.n, shape, rng=0, atrophy=families)
    synthetic = phantom_cohort(args.n, shape, rng=1, atrophy=families)
    print(f"made 2 x {args.n} phantoms at {shape} in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    report = evaluate_synthesis(real, synthetic, max_pairs=args.max_pairs)
    total = time.perf_counter() - t0
    for name, seconds in report["timings"].items():
        print(f"  {name:16s} {seconds:7.1f} s")
    print(f"evaluate_synthesis, {args.n} vs {args.n} at {shape}: {total:.1f} s in all")
    div = report["diversity"]
    c2st = report["classifier_two_sample_test"]
    print(
        f"diversity real {div['real']:.3f} synthetic {div['synthetic']:.3f}; "
        f"Frechet {report['frechet_distance']:.3f}; MMD^2 {report['mmd2_rbf']:.4f}; "
        f"precision {report['prdc']['precision']:.2f} "
        f"recall {report['prdc']['recall']:.2f}; "
        f"C2ST {c2st['accuracy']:.2f} [{c2st['ci_low']:.2f}, {c2st['ci_high']:.2f}]; "
        f"near copies {report['memorization']['flagged_fraction']:.0%}"
    )


if __name__ == "__main__":
    main()
