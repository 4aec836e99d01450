"""What is saved and read back: run records, journals, run sets, peaks and noise-profile files,
and the asv and pytest-benchmark result files read into the same records."""
