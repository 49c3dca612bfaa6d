"""castillo-report: pictures and tables of a castillo dataset's length distributions."""
