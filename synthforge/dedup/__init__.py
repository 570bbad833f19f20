"""Near-duplicate detection (MinHash + LSH + global clusters) and n-gram decontamination, as a library."""
