"""ipvsadm's views of the virtual-server table (reference section 9)."""

from pylvs.ipvsadm.listing import (
    SYSTEM_REVERSE_RESOLVER,
    ReverseResolver,
    format_connections,
    format_daemon,
    format_json,
    format_list,
    format_rate,
    format_save,
    format_services,
    format_stats,
    format_timeout,
)

__all__ = [
    "SYSTEM_REVERSE_RESOLVER",
    "ReverseResolver",
    "format_connections",
    "format_daemon",
    "format_json",
    "format_list",
    "format_rate",
    "format_save",
    "format_services",
    "format_stats",
    "format_timeout",
]
