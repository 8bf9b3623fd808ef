# Timings of lme4 / lmerTest / pbkrtest inference, for bench_inference.py (JSON on stdout).
#   Rscript benchmarks/bench_inference.R REPS
suppressPackageStartupMessages({library(lmerTest); library(pbkrtest); library(jsonlite)})
reps <- as.integer(commandArgs(TRUE)[1])
best <- function(expr) { e <- substitute(expr); pf <- parent.frame()
  eval(e, pf); min(vapply(seq_len(reps), function(i) system.time(eval(e, pf))[["elapsed"]], 0)) }
dd <- "pylmem/datasets/data/"
rat <- read.csv(paste0(dd, "ratWeight.csv")); rat$id <- factor(rat$id)
sleep <- read.csv(paste0(dd, "sleepstudy.csv")); sleep$Subject <- factor(sleep$Subject)
cake <- read.csv(paste0(dd, "cake.csv")); cake$temperature <- factor(cake$temperature)
cake$recipe <- factor(cake$recipe); cake$replicate <- factor(cake$replicate)
out <- list()
for (cs in list(list("rat", "weight ~ week + (week | id)", rat),
                list("sleepstudy", "Reaction ~ Days + (Days | Subject)", sleep),
                list("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)", cake))) {
  f <- as.formula(cs[[2]]); d <- cs[[3]]
  t_lme4 <- best(lme4::lmer(f, d))
  t_lmerTest <- best(lmerTest::lmer(f, d))      # fit + Hessian/Jacobian for Satterthwaite
  m <- lmerTest::lmer(f, d)
  t_satt <- best(summary(m)$coefficients)
  t_anova <- best(anova(m))
  t_kr <- if (nrow(d) <= 300) best(summary(m, ddf = "Kenward-Roger")$coefficients) else NA
  mml <- lme4::lmer(f, d, REML = FALSE)
  t_fit_ml <- best(lme4::lmer(f, d, REML = FALSE))
  t_prof <- if (cs[[1]] != "cake") system.time(suppressMessages(confint(mml, method = "profile")))[["elapsed"]] else NA
  out[[cs[[1]]]] <- list(lme4_fit = t_lme4, lmerTest_fit = t_lmerTest, satt_table = t_satt,
                         anova3 = t_anova, kr_table = t_kr, lme4_fit_ml = t_fit_ml, profile_confint = t_prof)
}
cat(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null"))
