"""embplan.imaging."""
