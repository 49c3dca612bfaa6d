"""castillo-compare: how the response-length distributions of two castillo outputs differ."""
