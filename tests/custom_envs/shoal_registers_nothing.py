"""A test-only module that imports fine but registers no env (for the error message)."""
