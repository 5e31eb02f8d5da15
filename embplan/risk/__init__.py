"""embplan.risk."""
