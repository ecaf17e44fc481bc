"""Stand-alone scripts the roles install on the nodes (stdlib only: they run under the image's python3)."""
