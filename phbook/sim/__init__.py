"""Simulators of astronomical images, each one physically grounded and vectorised."""
