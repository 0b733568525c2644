"""skewless training."""
