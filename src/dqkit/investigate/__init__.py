"""Investigation: read span exports and the warehouse, never the pipeline's objects."""
