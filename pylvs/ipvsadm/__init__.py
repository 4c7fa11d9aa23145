"""ipvsadm's views of the virtual-server table (reference section 9)."""

from pylvs.ipvsadm.listing import format_list, format_rate, format_stats

__all__ = ["format_list", "format_rate", "format_stats"]
