"""``python -m skewless.cli``: the same command as ``skewless``."""

from skewless.cli import main

main()
