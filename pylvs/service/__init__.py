"""Running pylvs as a service: runtime paths, the one-instance lock, readiness
(daemonizing and sd_notify), logging.  Shared by every daemon role (lvs, pulse, web)."""
