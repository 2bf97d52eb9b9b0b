"""The robustness suite: bad inputs, damaged files and faults (issue 11)."""
