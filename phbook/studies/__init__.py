"""A chapter's whole experiment, used by both the chapter and its bench script."""
