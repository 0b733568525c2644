"""Reliability and security tests: faults (kills, dropped connections, restarts), bad input, TTL parity."""
