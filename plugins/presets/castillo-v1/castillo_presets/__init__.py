"""castillo's built-in run presets."""
