"""Data: sources, the processed format, preparation, transforms and the DataModule."""
