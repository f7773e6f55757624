"""Recipes shipped with coopnets (package data)."""
