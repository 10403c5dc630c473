"""The ASGI entry point daphne serves: HTTP through Django, WebSockets through the realtime app."""

import os

from wedsync.http_handler import one_thread_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wedsync.settings")
# Set up Django before importing anything that uses models; a request's middleware and view run in
# one thread (wedsync/http_handler.py).
django_asgi_app = one_thread_asgi_application()

from realtime.daphne import patches as daphne_patches  # noqa: E402
from realtime.node.hub import node_hub  # noqa: E402
from realtime.routing import NodeApplication, websocket_urlpatterns  # noqa: E402

# Protocol close codes, frame limits, write back-pressure, drain on SIGTERM; and the node's hub
# starts with the server, so /readyz tells the load balancer when it can take sockets.
daphne_patches.install(on_running=node_hub)

application = NodeApplication(http=django_asgi_app, websocket_routes=websocket_urlpatterns)
