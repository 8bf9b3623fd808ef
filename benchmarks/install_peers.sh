#!/usr/bin/env bash
# Install the libraries compare.py runs beside pylmem, on a fresh Debian/Ubuntu machine:
# R with lme4 (and jsonlite) from the distribution, mixedlm and statsmodels from PyPI.
# Run as root (or with sudo); pylmem itself: `pip install -e .` from the repository root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends r-base-core r-cran-lme4 r-cran-jsonlite

PY="${PYTHON:-python3}"
"$PY" -m pip install --upgrade mixedlm statsmodels

# check
Rscript -e 'suppressPackageStartupMessages(library(lme4)); cat("R", R.version$major, ".", R.version$minor, " lme4 ", as.character(packageVersion("lme4")), "\n", sep="")'
"$PY" -c 'import importlib.metadata as m; print("mixedlm", m.version("mixedlm"), "statsmodels", m.version("statsmodels"))'
