"""The ``synthforge`` command line: a thin layer over the library."""
