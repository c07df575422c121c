"""From a grid to records: schema, cells and their keys, execution, parallel backends, model cache,
record store and provenance."""
