"""castillo-formats: CASTILLO v1's JSON layout in and out, and the Hugging Face dataset layout out."""
