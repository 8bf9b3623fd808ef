# lme4 1.1-31 values beyond make_glmer_refs.R (tolPwrss = 1e-12):
#  - profile confidence intervals of cbpp's Laplace fit of the fixed effects;
#  - the uncorrelated random slope y ~ x + (x || g) on glmer_data/sim_slope.csv.
# Writes tests/reference/glmer_profile_refs.json, read by tests/test_glmer.py.
suppressMessages(library(lme4))
ctl <- glmerControl(tolPwrss = 1e-12)
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial, control = ctl)
ci <- confint(m, method = "profile", parm = "beta_")
d <- read.csv("tests/reference/glmer_data/sim_slope.csv")
d$g <- factor(d$g)
u <- glmer(y ~ x + (x || g), d, binomial, control = ctl)
out <- list(rows = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]),
            double_bar = list(loglik = as.numeric(logLik(u)), theta = unname(getME(u, "theta")),
                              fixef = unname(fixef(u))))
writeLines(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE),
           "tests/reference/glmer_profile_refs.json")
