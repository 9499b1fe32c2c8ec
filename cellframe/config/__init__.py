"""Configuration from DNS: TXT ``key=value`` records keyed by hostname, read from a zone file
or a DNS server, watched for changes, registered with dynamic updates, and exported to shells.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
