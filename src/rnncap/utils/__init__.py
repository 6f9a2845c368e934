"""Small shared helpers: atomic writes, device resolution, plots, config dictionaries."""
