"""A web app for cellframe's web cells: any WSGI callable, named in DNS as ``app=hello:app``
(with this folder on the node's ``PYTHONPATH``)."""

import json
import os


def app(environ, start_response):
    body = json.dumps({"hello": "world", "served-by": os.getpid(),
                       "path": environ.get("PATH_INFO", "/")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
