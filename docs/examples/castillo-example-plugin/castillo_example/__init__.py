"""An example third-party castillo plugin."""
