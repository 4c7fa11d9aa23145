"""The pulse role: heartbeat, failover, gratuitous ARP, config sync and connection sync."""
