"""Reading and writing astronomical data files."""
