# lme4 1.1-31 on the q = 10 term of tests/reference/hostile/q10_rank3.csv (written by
# hostile_data.py): ML, nloptwrap and bobyqa (Nelder-Mead is too slow at 55 parameters),
# the better of the two.  Usage: Rscript tests/reference/make_q10_refs.R  (repository root)
suppressMessages({library(lme4); library(jsonlite)})
d <- read.csv("tests/reference/hostile/q10_rank3.csv")
d$a <- factor(d$a)
form <- y ~ 1 + (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 | a)
res <- list()
best <- NULL
for (opt in c("nloptwrap", "bobyqa")) {
  f <- suppressWarnings(suppressMessages(
    lmer(form, data = d, REML = FALSE,
         control = lmerControl(optimizer = opt, optCtrl = list(maxfun = 1e5)))))
  res[[paste0("loglik_", opt)]] <- as.numeric(logLik(f))
  if (is.null(best) || deviance(f) < deviance(best)) { best <- f; best_opt <- opt }
}
res$optimizer <- best_opt
res$loglik <- as.numeric(logLik(best))
res$theta <- unname(getME(best, "theta"))
res$sigma2 <- sigma(best)^2
res$fixef <- unname(fixef(best))
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "tests/reference/q10_lme4.json")
