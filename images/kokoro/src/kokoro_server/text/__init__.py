"""Text floor: input cleaning, grapheme-to-phoneme per language, chunking."""
