"""Benchmark of pylmem.em.

* 50 EM iterations (``tol=None``, the seed's ``em.lmem``) on the rat weight polynomial
  model ``weight ~ week + week2 + (week + week2 | id)`` (2,235 rows, 160 rats);
* 50 EM iterations on a simulated data set of 1,000,000 observations in 100,000 groups
  with X = A = [1, t, t²] (q = 3, fixed seed), with the one-off set-up (grouping and the
  per-group cross-products) timed apart, and the peak resident memory;
* the accelerated EM (``accelerate=True``, ``tol=1e-10``) to convergence on the two rat
  models, and the number of EM updates each method needs to reach the log-likelihood
  targets -8691.3502 / -8480.7455 (the table of the ``pylmem.em`` docstring).

Times are the best of a few repetitions.  Run:  ``python benchmarks/bench_em.py``
(``--quick`` skips the iteration-count table).
"""
from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np

from pylmem.datasets import load
from pylmem.estimation.em import em

TARGETS = {"poly": -8691.3502, "gender": -8480.7455}


def best_of(fn, reps):
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def rat_models():
    d = load("ratWeight")
    d["week2"] = d["week"] ** 2
    w, w2 = d["week"].to_numpy(float), d["week2"].to_numpy(float)
    X = np.column_stack([np.ones(len(d)), w, w2])
    male = (d["gender"] == "Male").to_numpy(float)
    Xg = np.column_stack([X, male, male * w, male * w2])
    y, g = d["weight"].to_numpy(float), d["id"].to_numpy()
    return {"poly": (y, g, X, X), "gender": (y, g, Xg, X)}


def simulate(n_groups=100_000, per_group=10, seed=20190110):
    """1,000,000 rows: y = Xβ + Xη_g + e, X = [1, t, t²], t in [0, 10), rows shuffled."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = rng.permutation(np.repeat(np.arange(n_groups, dtype=np.int64), per_group))
    t = rng.uniform(0.0, 10.0, n)
    X = np.column_stack([np.ones(n), t, t * t])
    Omega = np.array([[25.0, 2.0, -0.1], [2.0, 4.0, -0.2], [-0.1, -0.2, 0.02]])
    eta = rng.multivariate_normal(np.zeros(3), Omega, n_groups)
    y = X @ np.array([50.0, 10.0, -0.5]) + np.einsum("ij,ij->i", X, eta[g]) \
        + rng.normal(0.0, 3.0, n)
    return y, g, X


def first_reach(model, target, accelerate):
    """Fewest EM updates (the n_iter budget) after which the fit reaches ``target``."""
    y, g, X, A = model
    if accelerate in (False, "ecme"):               # monotone sequences: read the trace
        r = em(y, g, X, A, n_iter=5000 if accelerate is False else 500, accelerate=accelerate)
        hit = np.flatnonzero(r.trace >= target)
        return int(hit[0]) + 1 if len(hit) else None
    for k in range(1, 1000):
        if em(y, g, X, A, n_iter=k, accelerate=accelerate).loglik >= target:
            return k
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the iteration-count table")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the 1M case")
    args = ap.parse_args(argv)
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}, {platform.node()}")

    models = rat_models()
    y, g, X, A = models["poly"]
    t, r = best_of(lambda: em(y, g, X, A, n_iter=50), 20)
    print(f"rat polynomial, 50 EM iterations (tol=None): {t * 1e3:.2f} ms  "
          f"(logLik {r.loglik:.3f}, set-up included)")
    t0, _ = best_of(lambda: em(y, g, X, A, n_iter=0), 20)
    print(f"    of which set-up (grouping, cross-products): {t0 * 1e3:.2f} ms; "
          f"per iteration {(t - t0) / 50 * 1e6:.0f} µs")

    for name, (y, g, X, A) in models.items():
        t, r = best_of(lambda: em(y, g, X, A, tol=1e-10, accelerate=True), 20)
        print(f"rat {name}: accelerated EM (SQUAREM-ECME, tol=1e-10) to convergence: "
              f"{t * 1e3:.2f} ms, {r.n_iter} EM updates, logLik {r.loglik:.6f} "
              f"(target {TARGETS[name]})")
        t, r = best_of(lambda: em(y, g, X, A, tol=1e-10, accelerate="squarem",
                                  max_iter=1000), 5)
        print(f"rat {name}: SQUAREM on the seed's EM map, tol=1e-10: "
              f"{t * 1e3:.2f} ms, {r.n_iter} EM updates, logLik {r.loglik:.6f}")

    y, g, X = simulate()
    print(f"simulated: n = {len(y):,} observations, {len(np.unique(g)):,} groups, q = 3")
    t0, _ = best_of(lambda: em(y, g, X, n_iter=0), args.reps)
    t, r = best_of(lambda: em(y, g, X, n_iter=50), args.reps)
    print(f"simulated 1M, 50 EM iterations (tol=None): {t:.3f} s  (set-up {t0:.3f} s, "
          f"per iteration {(t - t0) / 50 * 1e3:.1f} ms; logLik {r.loglik:.2f})")
    t, r = best_of(lambda: em(y, g, X, tol=1e-10, accelerate=True), 1)
    print(f"simulated 1M, accelerated EM to convergence: {t:.3f} s, {r.n_iter} EM updates, "
          f"logLik {r.loglik:.4f}; beta {np.round(r.beta, 4)}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:.0f} MiB "
          f"(the data alone: {(y.nbytes + g.nbytes + X.nbytes) / 2**20:.0f} MiB)")

    if not args.quick:
        print("EM updates to reach the logLik targets (n_iter budget):")
        for name in ("poly", "gender"):
            row = []
            for acc in (False, "squarem", "ecme", True):
                row.append(f"{acc if acc is not True else 'squarem-ecme'}="
                           f"{first_reach(models[name], TARGETS[name], acc)}")
            print(f"  {name} (logLik >= {TARGETS[name]}): " + ", ".join(row))


if __name__ == "__main__":
    main()
