# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .dataplane import HaproxyPool as HaproxyPool
from .dataplane import WantedServer as WantedServer
from .haproxy import HaproxyError as HaproxyError
from .haproxy import HaproxyRuntime as HaproxyRuntime
from .haproxy import HaproxyUnreachableError as HaproxyUnreachableError
from .haproxy import ServerState as ServerState
from .launch import HaproxyProcess as HaproxyProcess
from .load import LoadMeter as LoadMeter
from .load import LoadSample as LoadSample
from .load import WeightPolicy as WeightPolicy
from .server import HttpServer as HttpServer
from .server import load_app as load_app

__all__ = [
    "HaproxyError",
    "HaproxyPool",
    "HaproxyProcess",
    "HaproxyRuntime",
    "HaproxyUnreachableError",
    "HttpServer",
    "LoadMeter",
    "LoadSample",
    "ServerState",
    "WantedServer",
    "WeightPolicy",
    "load_app",
]
