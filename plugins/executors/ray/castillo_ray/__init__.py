"""castillo-ray: run castillo's grid as Ray tasks on a local or remote cluster."""
