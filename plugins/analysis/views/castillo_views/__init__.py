"""castillo-views: CASTILLO v1's three dataset configs of any castillo output."""
