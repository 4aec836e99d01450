"""The ways in: the command line, asv and pytest-benchmark. They parse, call and print."""
