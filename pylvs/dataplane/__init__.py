"""The packet core: compiled tables, the connection table and the sans-I/O engine."""

from pylvs import kernel_cache  # noqa: F401 - first: stale numba caches go before a kernel loads
