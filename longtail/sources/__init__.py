"""Sources: one module per kind of input a Dataset can be built from."""
