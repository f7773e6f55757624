"""An example third-party coopnets plugin (a separate package, found through its entry point)."""
