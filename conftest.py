"""Shared by pytest over tests/ and nbval over notebooks/ (the kernels inherit this environment)."""

import os

# Widgets draw their static figure: no widget front end under nbval, and outputs stay comparable.
os.environ.setdefault("COURSE_STATIC_WIDGETS", "1")
