"""hakit's benchmark: ``make bench`` (``python -m bench``); see bench/RESULTS.md for method."""
