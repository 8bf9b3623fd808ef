# Reference values for weights, type III tests with empty cells and poly() terms (lmerTest
# 3.1.3, lme4 1.1-31, pbkrtest 0.5.2).  Writes tests/reference/carrots.csv (lmerTest's carrots
# data) and tests/reference/trust_refs.json.
# Usage: Rscript tests/reference/make_trust_refs.R  (from the repository root)
suppressMessages({library(lmerTest); library(pbkrtest); library(jsonlite)})
out <- "tests/reference"
data(carrots, package = "lmerTest")
write.csv(carrots, file.path(out, "carrots.csv"), row.names = FALSE)
tab <- function(a) list(terms = rownames(a), sumsq = unname(a[["Sum Sq"]]),
                        numdf = unname(a[["NumDF"]]), dendf = unname(a[["DenDF"]]),
                        F = unname(a[["F value"]]), p = unname(a[["Pr(>F)"]]))
res <- list()
# lmerTest's carrots model: 6 empty Frequency x Income cells
m1 <- lmer(Preference ~ sens2 * Frequency * Income + (1 + sens2 | Consumer), data = carrots)
msg <- character(0)
a3 <- withCallingHandlers(anova(m1, type = 3),
                          message = function(m) { msg <<- c(msg, conditionMessage(m))
                                                  invokeRestart("muffleMessage") })
res$carrots <- list(formula = "Preference ~ sens2 * Frequency * Income + (1 + sens2 | Consumer)",
                    factors = c("Frequency", "Income", "Consumer"),
                    fixef_names = names(fixef(m1)), fixef = unname(fixef(m1)),
                    loglik = as.numeric(logLik(m1)), type3 = tab(a3),
                    type1 = tab(anova(m1, type = 1)), message = paste(msg, collapse = "\n"))
# a multi-column term: poly()
m2 <- lmer(Preference ~ poly(sens2, 2) * Frequency + Income + (1 | Consumer), data = carrots)
res$carrots_poly <- list(formula = "Preference ~ poly(sens2, 2) * Frequency + Income + (1 | Consumer)",
                         factors = c("Frequency", "Income", "Consumer"),
                         fixef = unname(fixef(m2)), loglik = as.numeric(logLik(m2)),
                         type3 = tab(anova(m2, type = 3)), type1 = tab(anova(m2, type = 1)))
# weights: lme4's fits do not depend on the weights' scale except through sigma
set.seed(1)
ss <- sleepstudy
ss$w <- runif(nrow(ss), 0.2, 3)
for (reml in c(FALSE, TRUE)) {
  for (k in c(1, 1000)) {
    ss$wk <- ss$w * k
    f <- lmer(Reaction ~ Days + (Days | Subject), data = ss, weights = wk, REML = reml)
    kr <- vcovAdj(f)
    res[[sprintf("sleep_w%g_%s", k, if (reml) "reml" else "ml")]] <- list(
      scale = k, reml = reml, loglik = as.numeric(logLik(f)), fixef = unname(fixef(f)),
      se = unname(sqrt(diag(as.matrix(vcov(f))))), sigma = sigma(f),
      theta = unname(getME(f, "theta")), fitted = unname(fitted(f)),
      pbkrtest_se = unname(sqrt(diag(as.matrix(kr)))))
  }
}
write.csv(ss[, c("Reaction", "Days", "Subject", "w")], file.path(out, "sleep_weights.csv"),
          row.names = FALSE)
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           file.path(out, "trust_refs.json"))
