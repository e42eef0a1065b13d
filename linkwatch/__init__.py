"""linkwatch: fast, careful multi-uplink failover for Linux routers."""

__version__ = "0.1.0"
