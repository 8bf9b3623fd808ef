"""Layer 6, reports: the printed, tabular and pictured forms of a fit.

lme4's print and summary layouts (``summary``), broom.mixed's tidy and glance tables
(``tidy``) and the diagnostic plots (``plots``).  Functions take a fit.

May import: every layer below (``util`` … ``postfit``); matplotlib (lazily).
"""
