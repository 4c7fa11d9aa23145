"""The packet core: compiled tables, the connection table and the sans-I/O engine."""
