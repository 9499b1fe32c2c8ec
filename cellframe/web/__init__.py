"""The web tier: web cells' HTTP server and load, and HAProxy as the proxy's data plane.

- ``server.py``: ``load_app`` and ``HttpServer`` (the user's WSGI app under waitress, with a
  health path);
- ``load.py``: ``LoadMeter`` (in flight, latency percentiles, CPU) and ``WeightPolicy``;
- ``haproxy.py``: ``HaproxyRuntime``, a client of HAProxy's runtime API;
- ``dataplane.py``: ``HaproxyPool``, the cluster's pool made true in one HAProxy backend;
- ``launch.py``: ``HaproxyProcess``, a private HAProxy on loopback.

The names are listed in ``__init__.pyi`` and load on first use (lazy_loader).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
