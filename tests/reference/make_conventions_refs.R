# Reference printouts for tests/test_conventions.py: lmerTest's summary layout (the df
# column formatted with the estimates), lme4's as.data.frame(VarCorr()) row order, the
# 1-based row names lme4 uses for observations.  Run from the repository root:
#   Rscript tests/reference/make_conventions_refs.R
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite)})
dd <- "pylmem/datasets/data"
sleep <- read.csv(file.path(dd, "sleepstudy.csv"))
sleep$Subject <- factor(sleep$Subject)
fm <- lmerTest::lmer(Reaction ~ Days + (Days | Subject), sleep)
s <- capture.output(print(summary(fm), correlation = FALSE))
fixed <- s[(grep("^Fixed effects:", s) + 1):(grep("^Fixed effects:", s) + 3)]
vc <- as.data.frame(VarCorr(fm))
pastes <- read.csv(file.path(dd, "Pastes.csv"))
fp <- lmerTest::lmer(strength ~ 1 + (1 | batch) + (1 | batch:cask), pastes)
sp <- capture.output(print(summary(fp)))
fixedp <- sp[(grep("^Fixed effects:", sp) + 1):(grep("^Fixed effects:", sp) + 2)]
out <- list(
  sleep_lmertest_fixed = fixed,
  pastes_lmertest_fixed = fixedp,
  sleep_varcorr = list(grp = vc$grp, var1 = vc$var1, var2 = vc$var2, vcov = vc$vcov,
                       sdcor = vc$sdcor),
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  lmerTest = as.character(packageVersion("lmerTest")))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null", pretty = TRUE),
           "tests/reference/conventions_refs.json")
