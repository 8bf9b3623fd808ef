"""Write the small hostile data sets of tests/test_hostile.py (deterministic seeds).

Run once: ``python tests/reference/hostile_data.py``; then ``Rscript
tests/reference/make_hostile_refs.R`` fits them with lme4 into hostile_lme4.json.
"""
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).parent / "hostile"


def base(seed=1, G=30, m=10):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), m)
    n = G * m
    x = rng.normal(size=n)
    y = 2 + x + rng.normal(size=G)[g] + 0.5 * rng.normal(size=G)[g] * x + rng.normal(size=n)
    return pd.DataFrame(dict(y=y, x=x, g=g))


def crossed(seed=1, n=300):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 20, n), rng.integers(0, 15, n)
    y = 1e5 * rng.normal(size=20)[a] + rng.normal(size=15)[b] + rng.normal(size=n)
    return pd.DataFrame(dict(y=y, a=a, b=b))


def q10(seed=5, G=60, m=20, rank=5):
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(G), m)
    n = G * m
    X = rng.normal(size=(n, 9))
    b = rng.normal(size=(G, rank)) @ rng.normal(size=(10, rank)).T      # rank-r covariance
    Z = np.column_stack([np.ones(n), X])
    y = 1 + np.einsum("nq,nq->n", Z, b[a]) + rng.normal(size=n)
    d = pd.DataFrame(X, columns=[f"x{i}" for i in range(9)])
    d["y"], d["a"] = y, a
    return d


def main():
    OUT.mkdir(exist_ok=True)
    d = base()
    d.to_csv(OUT / "base.csv", index=False)
    d.assign(y=d.y + 1e6).to_csv(OUT / "shift_y_1e6.csv", index=False, float_format="%.17g")
    d.assign(x=d.x + 1e4).to_csv(OUT / "shift_x_1e4.csv", index=False, float_format="%.17g")
    crossed().to_csv(OUT / "crossed_1e5.csv", index=False, float_format="%.17g")
    q10().to_csv(OUT / "q10_rank5.csv", index=False, float_format="%.17g")
    q10(seed=2, G=30, m=20, rank=3).to_csv(OUT / "q10_rank3.csv", index=False, float_format="%.17g")


if __name__ == "__main__":
    main()
