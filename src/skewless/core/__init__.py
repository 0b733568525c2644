"""Layer 0 — core: the profile (the one function that decides the environment), days, errors."""
