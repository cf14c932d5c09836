"""Small real data sets built from annotated images that ship inside Python packages (numpy, no framework)."""
