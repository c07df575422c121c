"""Studies behind the suite's defaults, rerunnable: each says how a default was chosen."""
