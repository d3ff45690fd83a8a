"""Model families of the book, one file per family."""
