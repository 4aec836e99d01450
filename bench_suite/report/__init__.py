"""Reports: tables (pandas), figures (matplotlib) and their rendering, all from the frame."""
