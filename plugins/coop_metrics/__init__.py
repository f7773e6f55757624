"""Built-in metric plugin of coopnets."""
