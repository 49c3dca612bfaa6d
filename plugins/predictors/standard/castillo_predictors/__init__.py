"""castillo's standard response-length predictors (see :mod:`castillo_predictors.plugin`)."""
