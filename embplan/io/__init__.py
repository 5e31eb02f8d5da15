"""embplan.io."""
