"""Everything that is not a method: data, models, training, metrics, grids, runner, rendering."""
