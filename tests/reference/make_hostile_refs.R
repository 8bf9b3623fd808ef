# lme4 1.1-31 fits of the hostile data sets (tests/reference/hostile/*.csv, written by
# hostile_data.py): ML, best objective of three optimizers (lme4's own may stop short).
# Usage: Rscript tests/reference/make_hostile_refs.R  (from the repository root)
suppressMessages({library(lme4); library(jsonlite)})
dir <- "tests/reference/hostile"
cases <- list(
  list(name="base_int", data="base.csv", formula="y ~ x + (1 | g)"),
  list(name="shift_y_1e6", data="shift_y_1e6.csv", formula="y ~ x + (1 | g)"),
  list(name="base_slope", data="base.csv", formula="y ~ x + (x | g)"),
  list(name="shift_x_1e4", data="shift_x_1e4.csv", formula="y ~ x + (x | g)"),
  list(name="crossed_1e5", data="crossed_1e5.csv", formula="y ~ 1 + (1 | a) + (1 | b)"),
  list(name="q10_rank5", data="q10_rank5.csv",
       formula="y ~ 1 + (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 | a)"))
res <- list()
for (s in cases) {
  d <- read.csv(file.path(dir, s$data))
  for (g in c("g", "a", "b")) if (!is.null(d[[g]])) d[[g]] <- factor(d[[g]])
  best <- NULL
  for (opt in c("nloptwrap", "bobyqa", "Nelder_Mead")) {
    f <- suppressWarnings(suppressMessages(
      lmer(as.formula(s$formula), data=d, REML=FALSE, control=lmerControl(optimizer=opt))))
    if (is.null(best) || deviance(f) < deviance(best)) { best <- f; best_opt <- opt }
  }
  res[[s$name]] <- list(data=s$data, formula=s$formula, optimizer=best_opt,
                        loglik=as.numeric(logLik(best)), theta=unname(getME(best, "theta")),
                        sigma2=sigma(best)^2, fixef=unname(fixef(best)))
}
writeLines(toJSON(res, digits=NA, auto_unbox=TRUE, pretty=TRUE), file.path("tests/reference", "hostile_lme4.json"))
