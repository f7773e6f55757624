"""The paper-table specs this plugin registers for `coop repro` (package data; docs/repro.md)."""
