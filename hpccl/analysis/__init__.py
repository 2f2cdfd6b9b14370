"""Reading run logs back: summaries, tables, plots."""
