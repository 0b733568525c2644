"""skewless monitoring."""
