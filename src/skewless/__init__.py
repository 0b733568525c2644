"""skewless: features defined once, served the same way to training and inference."""
