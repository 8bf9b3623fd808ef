# lme4 1.1-31 profile confidence intervals of cbpp's Laplace fit (tolPwrss = 1e-12):
# tests/reference/glmer_profile_refs.json, read by tests/test_glmer.py.
suppressMessages(library(lme4))
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial,
           control = glmerControl(tolPwrss = 1e-12))
ci <- confint(m, method = "profile", parm = "beta_")
out <- list(rows = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]))
writeLines(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE),
           "tests/reference/glmer_profile_refs.json")
