"""Table specifications shipped with coopnets (package data)."""
