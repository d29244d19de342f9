"""Environment compatibility shims that import only the standard library."""
