"""From records to what a reader sees: summary statistics, tables and figures."""
