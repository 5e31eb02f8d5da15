"""embplan.protocols."""
